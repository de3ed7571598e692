//! The statistics RPCs of `QueryService`: GetWorkerStats and GetDataQualitySummary, read from
//! hourly rollups; and the 24-hour health summary that ListWorkers shows for each worker.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use pbjson_types::Timestamp;

use super::query::QueryApi;
use crate::{
    domain::{
        analysis::quality_level_to_proto,
        rollup::{DAY_US, HOUR_US, Rollup, cover, hour_start, level_of, window_stats},
        validation::{from_timestamp, to_timestamp},
    },
    error::Error,
    proto::v1::{
        DataQualitySummary, GetDataQualitySummaryRequest, GetWorkerStatsRequest, QualityLevel, RollingAverage, Scores,
        StatsWindow, TrendBucket, TrendPoint, WorkerQuality, WorkerStats,
    },
    store::{
        executions, from_micros,
        rollups::{self, GroupBy},
        to_micros, workers,
    },
};

/// The longest explicit window accepted.
const MAX_WINDOW_US: i64 = 400 * DAY_US;
/// Windows up to this long are bucketed by hour in trends; longer ones by day.
const HOURLY_TREND_MAX_US: i64 = 7 * DAY_US;

/// A resolved window: `[since_us, until_us)`, whole UTC hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since_us: i64,
    pub until_us: i64,
}

fn hour_ceil(us: i64) -> i64 {
    let floor = hour_start(us);
    if floor == us { us } else { floor + HOUR_US }
}

impl Window {
    /// The last `hours` whole hours, the current (partial) hour included.
    pub fn last_hours(now: DateTime<Utc>, hours: i64) -> Window {
        let until_us = hour_ceil(to_micros(now));
        Window { since_us: until_us - hours * HOUR_US, until_us }
    }

    /// From a request's `window`, or its explicit `since`/`until` (which win when `since` is set).
    pub fn resolve(
        window: i32,
        since: Option<&Timestamp>,
        until: Option<&Timestamp>,
        now: DateTime<Utc>,
    ) -> Result<Window, Error> {
        let time = |field: &str, ts: &Timestamp| from_timestamp(ts).map_err(|why| Error::invalid(field, why));
        if let Some(since) = since {
            let since_us = hour_start(to_micros(time("since", since)?));
            let until_us = hour_ceil(to_micros(until.map(|u| time("until", u)).transpose()?.unwrap_or(now)));
            if since_us >= until_us {
                return Err(Error::invalid("since", "must be before until"));
            }
            if until_us - since_us > MAX_WINDOW_US {
                return Err(Error::invalid("since", "the window may span at most 400 days"));
            }
            return Ok(Window { since_us, until_us });
        }
        if until.is_some() {
            return Err(Error::invalid("until", "needs since"));
        }
        let hours = match StatsWindow::try_from(window) {
            Ok(StatsWindow::Unspecified | StatsWindow::StatsWindow24h) => 24,
            Ok(StatsWindow::StatsWindow7d) => 7 * 24,
            Ok(StatsWindow::StatsWindow30d) => 30 * 24,
            Ok(StatsWindow::StatsWindow90d) => 90 * 24,
            Err(_) => return Err(Error::invalid("window", format!("unknown value {window}"))),
        };
        Ok(Window::last_hours(now, hours))
    }

    pub fn timestamps(&self) -> (Option<Timestamp>, Option<Timestamp>) {
        (Some(to_timestamp(from_micros(self.since_us))), Some(to_timestamp(from_micros(self.until_us))))
    }
}

fn level(runs: i64, mean: f64) -> i32 {
    level_of(runs, mean).map_or(QualityLevel::Unspecified, quality_level_to_proto) as i32
}

fn rolling(recent: &[(i64, f64)], n: usize) -> RollingAverage {
    let runs = &recent[..recent.len().min(n)];
    if runs.is_empty() {
        return RollingAverage::default();
    }
    let count = runs.len() as f64;
    RollingAverage {
        runs: runs.len() as i64,
        avg_duration_ms: runs.iter().map(|(d, _)| *d as f64).sum::<f64>() / count,
        avg_overall_score: runs.iter().map(|(_, s)| *s).sum::<f64>() / count,
    }
}

impl QueryApi {
    pub async fn get_worker_stats(&self, request: GetWorkerStatsRequest) -> Result<WorkerStats, Error> {
        super::observe("GetWorkerStats", async {
            let window = Window::resolve(request.window, request.since.as_ref(), request.until.as_ref(), self.now())?;
            let worker = self.worker_by_name("worker_name", &request.worker_name).await?;
            let db = self.reader();
            let hourly = window.until_us - window.since_us <= HOURLY_TREND_MAX_US;
            let bucket = if hourly { HOUR_US } else { DAY_US };
            let cover = cover(window.since_us, window.until_us, hourly);
            let rows = rollups::aggregate(db, Some(worker.id), &cover, GroupBy::Bucket(bucket)).await?;
            let sketch = rollups::durations(db, worker.id, &cover).await?;
            let recent = executions::recent_runs(db, worker.id, 100).await?;
            let stats = window_stats(&rows, bucket, sketch);
            let t = &stats.total;
            let per_run = |sum: i64| if t.runs > 0 { sum as f64 / t.runs as f64 } else { 0.0 };
            let last_10 = rolling(&recent, 10);
            let (since, until) = window.timestamps();
            Ok(WorkerStats {
                worker_name: worker.worker_name,
                since,
                until,
                total_executions: t.runs,
                successful_executions: t.successful,
                failed_executions: t.failed,
                partial_executions: t.partial,
                timed_out_executions: t.timed_out,
                skipped_executions: t.skipped,
                success_rate: t.success_rate(),
                avg_duration_ms: t.mean_duration_ms(),
                p50_duration_ms: stats.p50_duration_ms,
                p95_duration_ms: stats.p95_duration_ms,
                max_duration_ms: t.duration_max_ms,
                avg_records_fetched: per_run(t.records_fetched),
                avg_records_processed: per_run(t.records_processed),
                avg_records_failed: per_run(t.records_failed),
                total_records_fetched: t.records_fetched,
                total_records_processed: t.records_processed,
                total_records_failed: t.records_failed,
                average_scores: Some(Scores {
                    reliability: stats.avg_reliability,
                    performance: stats.avg_performance,
                    data_quality: stats.avg_data_quality,
                    resource_efficiency: stats.avg_resource_efficiency,
                    overall: stats.avg_overall,
                }),
                quality_level: level(last_10.runs, last_10.avg_overall_score),
                last_10: Some(last_10),
                last_100: Some(rolling(&recent, 100)),
                trend_bucket: if hourly { TrendBucket::Hour } else { TrendBucket::Day } as i32,
                score_trend: stats
                    .trend
                    .iter()
                    .map(|(start, r)| TrendPoint {
                        bucket_start: Some(to_timestamp(from_micros(*start))),
                        count: r.runs,
                        success_rate: r.success_rate(),
                        mean_overall_score: r.mean_overall(),
                        mean_duration_ms: r.mean_duration_ms(),
                    })
                    .collect(),
            })
        })
        .await
    }

    pub async fn get_data_quality_summary(
        &self,
        request: GetDataQualitySummaryRequest,
    ) -> Result<DataQualitySummary, Error> {
        super::observe("GetDataQualitySummary", async {
            let window = Window::resolve(request.window, request.since.as_ref(), request.until.as_ref(), self.now())?;
            let db = self.reader();
            let per_worker =
                rollups::aggregate(db, None, &cover(window.since_us, window.until_us, false), GroupBy::Worker).await?;
            let names = workers::names(db).await?;
            let mut total = Rollup::default();
            let mut workers: Vec<WorkerQuality> = per_worker
                .iter()
                .map(|(id, r)| {
                    total.merge(r);
                    WorkerQuality {
                        worker_name: names.get(id).cloned().unwrap_or_default(),
                        runs: r.runs,
                        mean_data_quality_score: r.mean_data_quality(),
                        quality_level: level(r.runs, r.mean_data_quality()),
                        validation_failures: r.validation_failed,
                        records_failed: r.records_failed,
                        missing_fields: r.missing_fields,
                        stalest_newest_record_age_seconds: r.newest_record_age_max,
                        rate_limited_runs: r.rate_limited_runs,
                    }
                })
                .collect();
            workers.sort_by(|a, b| {
                a.mean_data_quality_score
                    .total_cmp(&b.mean_data_quality_score)
                    .then_with(|| a.worker_name.cmp(&b.worker_name))
            });
            let (since, until) = window.timestamps();
            Ok(DataQualitySummary {
                since,
                until,
                overall_quality_level: level(total.runs, total.mean_data_quality()),
                overall_data_quality_score: total.mean_data_quality(),
                total_executions: total.runs,
                total_records_processed: total.records_processed,
                total_validation_failures: total.validation_failed,
                rate_limit_incidents: total.rate_limited_runs,
                workers,
            })
        })
        .await
    }

    /// `(runs, success rate)` of each of `worker_ids` over the last 24 hours.
    pub(crate) async fn health_24h(&self, worker_ids: &[i64]) -> Result<HashMap<i64, Rollup>, Error> {
        let window = Window::last_hours(self.now(), 24);
        let worker = match worker_ids {
            [one] => Some(*one),
            _ => None,
        };
        let wanted: std::collections::HashSet<i64> = worker_ids.iter().copied().collect();
        Ok(rollups::aggregate(self.reader(), worker, &cover(window.since_us, window.until_us, false), GroupBy::Worker)
            .await?
            .into_iter()
            .filter(|(id, _)| wanted.contains(id))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|t| t.to_utc()).unwrap_or_default()
    }

    #[test]
    fn predefined_windows_cover_whole_hours_up_to_the_current_one() {
        let now = at("2026-11-28T14:20:00Z");
        let w = Window::resolve(0, None, None, now).expect("24h");
        assert_eq!(from_micros(w.until_us), at("2026-11-28T15:00:00Z"));
        assert_eq!(from_micros(w.since_us), at("2026-11-27T15:00:00Z"));
        let w = Window::resolve(StatsWindow::StatsWindow7d as i32, None, None, now).expect("7d");
        assert_eq!(w.until_us - w.since_us, 7 * DAY_US);
    }

    #[test]
    fn explicit_windows_widen_to_whole_hours_and_are_checked() {
        let now = at("2026-11-28T14:20:00Z");
        let since = to_timestamp(at("2026-11-28T10:30:00Z"));
        let until = to_timestamp(at("2026-11-28T12:10:00Z"));
        let w = Window::resolve(0, Some(&since), Some(&until), now).expect("window");
        assert_eq!(
            (from_micros(w.since_us), from_micros(w.until_us)),
            (at("2026-11-28T10:00:00Z"), at("2026-11-28T13:00:00Z"))
        );
        assert!(Window::resolve(0, Some(&until), Some(&since), now).is_err());
        assert!(Window::resolve(0, None, Some(&until), now).is_err());
        assert!(Window::resolve(42, None, None, now).is_err());
    }
}
