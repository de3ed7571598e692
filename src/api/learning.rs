//! The learning RPCs of `QueryService`: GetWorkerLearning (best hour and day, breakdowns, trends,
//! recommendations) and GetSystemLearning (the fleet at a glance). Both read rollups, grouped in the
//! database by hour of day or weekday, so their cost does not grow with the number of runs; the
//! resource hints read the reports of the worker's latest runs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{query::QueryApi, stats::Window};
use crate::{
    domain::{
        insights::{
            self, DEFAULT_MIN_SAMPLES, MIN_SUCCESS_RATE, Optimal, RecommendationInput, SlotStats, optimal_slot, trend,
        },
        rollup::{DAY_US, Rollup, cover},
        schedule::WorkerHealth,
    },
    error::Error,
    proto::v1::{
        AnomalyKind as PbKind, AnomalyKindCount, GetSystemLearningRequest, GetWorkerLearningRequest, Recommendation,
        SlotPerformance, StatsWindow, SystemLearning, Trend, WorkerAttention, WorkerLearning,
    },
    store::{
        anomalies, executions, from_micros,
        ingest::health_to_proto,
        rollups::{self, GroupBy},
        workers::{self, WorkerRow},
    },
};

/// Resource hints look at this many most recent reports.
const RESOURCE_RUNS: u64 = 100;
/// The memory budget recommendations compare peaks with (the scoring default).
const MEMORY_LIMIT_MB: f64 = 500.0;
/// Workers with fewer runs in 24 h are not judged on their success rate.
const ATTENTION_MIN_RUNS: i64 = 5;
/// At most this many workers in the system view's lists.
const SYSTEM_LIST_LIMIT: usize = 50;

fn slot_stats(rows: &[(i64, Rollup)]) -> Vec<SlotStats> {
    rows.iter()
        .filter(|(_, r)| r.runs > 0)
        .map(|(slot, r)| SlotStats {
            slot: u32::try_from(*slot).unwrap_or_default(),
            runs: u64::try_from(r.runs).unwrap_or_default(),
            mean_score: r.mean_overall(),
            mean_duration_ms: r.mean_duration_ms(),
            success_rate: r.success_rate(),
        })
        .collect()
}

fn slot_to_proto(s: &SlotStats) -> SlotPerformance {
    SlotPerformance {
        slot: s.slot,
        runs: i64::try_from(s.runs).unwrap_or(i64::MAX),
        mean_overall_score: s.mean_score,
        mean_duration_ms: s.mean_duration_ms,
        success_rate: s.success_rate,
    }
}

/// The winner and a note with its numbers, or no winner and why.
fn optimal(slots: &[SlotStats], min_samples: u64, name: impl Fn(u32) -> String) -> (Option<u32>, String) {
    match optimal_slot(slots, min_samples) {
        Optimal::Found { slot, mean_score, runs } => {
            (Some(slot), format!("{}: mean overall score {mean_score:.1} over {runs} runs", name(slot)))
        }
        Optimal::NotEnoughData { reason } => (None, reason),
    }
}

const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

fn trend_to_proto(t: &insights::Trend) -> Trend {
    Trend {
        direction: t.direction.to_owned(),
        slope_per_day: t.slope_per_day,
        samples: i64::try_from(t.samples).unwrap_or(i64::MAX),
    }
}

fn recommendation_to_proto(r: insights::Recommendation, worker_name: &str) -> Recommendation {
    Recommendation {
        kind: r.kind.to_owned(),
        message: r.message,
        evidence: r.evidence,
        worker_name: worker_name.to_owned(),
    }
}

/// Resource figures of recent reports: (runs, mean DB queries, max memory, mean memory).
fn resource_figures(reports: &[crate::proto::v1::ExecutionReport]) -> (u64, f64, f64, f64) {
    let resources: Vec<_> = reports.iter().filter_map(|r| r.resource_metrics).collect();
    let memory: Vec<f64> = resources.iter().filter_map(|r| r.memory_peak_mb).filter(|m| m.is_finite()).collect();
    let mean = |values: &[f64]| if values.is_empty() { 0.0 } else { values.iter().sum::<f64>() / values.len() as f64 };
    let queries: Vec<f64> = resources.iter().map(|r| r.database_query_count as f64).collect();
    (reports.len() as u64, mean(&queries), memory.iter().copied().fold(0.0, f64::max), mean(&memory))
}

fn most_common_hour(hourly: &[SlotStats]) -> Option<u32> {
    hourly.iter().max_by_key(|s| (s.runs, std::cmp::Reverse(s.slot))).map(|s| s.slot)
}

fn total(rows: &[(i64, Rollup)]) -> Rollup {
    let mut t = Rollup::default();
    for (_, r) in rows {
        t.merge(r);
    }
    t
}

impl QueryApi {
    pub async fn get_worker_learning(&self, request: GetWorkerLearningRequest) -> Result<WorkerLearning, Error> {
        super::observe("GetWorkerLearning", async {
            let window = match request.window {
                0 => StatsWindow::StatsWindow30d as i32,
                w => w,
            };
            let now = self.now();
            let window = Window::resolve(window, None, None, now)?;
            let worker = self.worker_by_name("worker_name", &request.worker_name).await?;
            let db = self.reader();
            let hours = cover(window.since_us, window.until_us, true);
            let hourly = slot_stats(&rollups::aggregate(db, Some(worker.id), &hours, GroupBy::HourOfDay).await?);
            let weekday = slot_stats(&rollups::aggregate(db, Some(worker.id), &hours, GroupBy::Weekday).await?);
            let days = cover(window.since_us, window.until_us, false);
            let daily = rollups::aggregate(db, Some(worker.id), &days, GroupBy::Bucket(DAY_US)).await?;
            let totals = total(&daily);
            let ran = daily.iter().filter(|(_, r)| r.runs > 0);
            let volume: Vec<(DateTime<Utc>, f64)> =
                ran.clone().map(|(day, r)| (from_micros(*day), r.records_processed as f64 / r.runs as f64)).collect();
            let durations: Vec<(DateTime<Utc>, f64)> =
                ran.map(|(day, r)| (from_micros(*day), r.mean_duration_ms())).collect();
            let reports = executions::recent_reports(db, worker.id, RESOURCE_RUNS).await?;
            let (_, avg_db_queries, max_memory_mb, avg_memory_mb) = resource_figures(&reports);
            let input = RecommendationInput {
                worker_name: worker.worker_name.clone(),
                hourly: hourly.clone(),
                min_samples: DEFAULT_MIN_SAMPLES,
                current_hour: most_common_hour(&hourly),
                rate_limited_runs: u64::try_from(totals.rate_limited_runs).unwrap_or_default(),
                runs: u64::try_from(totals.runs).unwrap_or_default(),
                avg_db_queries,
                max_memory_mb,
                avg_memory_mb,
                memory_limit_mb: MEMORY_LIMIT_MB,
                success_rate: totals.success_rate(),
            };
            let (optimal_hour, optimal_hour_note) = optimal(&hourly, DEFAULT_MIN_SAMPLES, |h| format!("{h:02}:00 UTC"));
            let (optimal_day, optimal_day_note) =
                optimal(&weekday, DEFAULT_MIN_SAMPLES, |d| WEEKDAYS.get(d as usize).unwrap_or(&"?").to_string());
            let starts: Vec<DateTime<Utc>> =
                anomalies::decode_recent(worker.recent_runs.as_deref()).iter().map(|r| r.started_at).collect();
            let (since, until) = window.timestamps();
            Ok(WorkerLearning {
                worker_name: worker.worker_name.clone(),
                since,
                until,
                runs: totals.runs,
                optimal_hour,
                optimal_hour_note,
                optimal_day,
                optimal_day_note,
                min_samples: DEFAULT_MIN_SAMPLES as i64,
                hourly_performance: hourly.iter().map(slot_to_proto).collect(),
                weekday_performance: weekday.iter().map(slot_to_proto).collect(),
                data_volume_trend: Some(trend_to_proto(&trend(&volume))),
                duration_trend: Some(trend_to_proto(&trend(&durations))),
                recommendations: insights::recommendations(&input)
                    .into_iter()
                    .map(|r| recommendation_to_proto(r, &worker.worker_name))
                    .collect(),
                inferred_schedule: crate::domain::schedule::infer(&starts)
                    .as_ref()
                    .map(super::query::schedule_to_proto),
            })
        })
        .await
    }

    pub async fn get_system_learning(&self, _request: GetSystemLearningRequest) -> Result<SystemLearning, Error> {
        super::observe("GetSystemLearning", async {
            let now = self.now();
            let db = self.reader();
            let day = Window::last_hours(now, 24);
            let week = Window::last_hours(now, 7 * 24);
            let month = Window::last_hours(now, 30 * 24);
            let per_worker_day =
                rollups::aggregate(db, None, &cover(day.since_us, day.until_us, true), GroupBy::Worker).await?;
            let day_total = total(&per_worker_day);
            let by_hour =
                rollups::aggregate(db, None, &cover(week.since_us, week.until_us, true), GroupBy::HourOfDay).await?;
            let mut runs_by_hour = vec![0_i64; 24];
            for (hour, r) in &by_hour {
                if let Some(slot) = usize::try_from(*hour).ok().and_then(|h| runs_by_hour.get_mut(h)) {
                    *slot += r.runs;
                }
            }
            let any_runs = runs_by_hour.iter().any(|r| *r > 0);
            let pick = |best: fn(i64, i64) -> bool| {
                let mut chosen = 0_usize;
                for (hour, runs) in runs_by_hour.iter().enumerate() {
                    if best(*runs, runs_by_hour[chosen]) {
                        chosen = hour;
                    }
                }
                u32::try_from(chosen).ok().filter(|_| any_runs)
            };
            let busiest_hour = pick(|a, b| a > b);
            let quietest_hour = pick(|a, b| a < b);

            let names = workers::names(db).await?;
            let rows = workers::list(db, None, u64::MAX >> 1).await?;
            let open = anomalies::open_all(db).await?;
            let day_by_worker: HashMap<i64, &Rollup> = per_worker_day.iter().map(|(w, r)| (*w, r)).collect();
            let attention = needing_attention(&rows, &open, &day_by_worker, now);

            // Opportunities: the per-worker recommendations over 30 days, from one grouped query.
            let month_cover = cover(month.since_us, month.until_us, true);
            let worker_hours = rollups::aggregate(db, None, &month_cover, GroupBy::WorkerHourOfDay).await?;
            let worker_month = rollups::aggregate(db, None, &month_cover, GroupBy::Worker).await?;
            let mut hourly: HashMap<i64, Vec<(i64, Rollup)>> = HashMap::new();
            for (key, r) in worker_hours {
                hourly.entry(key.div_euclid(24)).or_default().push((key.rem_euclid(24), r));
            }
            let memory: HashMap<i64, (f64, f64)> = rows
                .iter()
                .map(|row| {
                    let peaks: Vec<f64> = anomalies::decode_recent(row.recent_runs.as_deref())
                        .iter()
                        .filter_map(|r| r.memory_peak_mb)
                        .collect();
                    let mean = if peaks.is_empty() { 0.0 } else { peaks.iter().sum::<f64>() / peaks.len() as f64 };
                    (row.id, (peaks.iter().copied().fold(0.0, f64::max), mean))
                })
                .collect();
            let mut optimization_opportunities = Vec::new();
            for (worker_id, totals) in &worker_month {
                let Some(name) = names.get(worker_id) else { continue };
                let slots = slot_stats(hourly.get(worker_id).map_or(&[][..], Vec::as_slice));
                let (max_memory_mb, avg_memory_mb) = memory.get(worker_id).copied().unwrap_or_default();
                let input = RecommendationInput {
                    worker_name: name.clone(),
                    current_hour: most_common_hour(&slots),
                    hourly: slots,
                    min_samples: DEFAULT_MIN_SAMPLES,
                    rate_limited_runs: u64::try_from(totals.rate_limited_runs).unwrap_or_default(),
                    runs: u64::try_from(totals.runs).unwrap_or_default(),
                    // Database queries are not rolled up; GetWorkerLearning reads them from the reports.
                    avg_db_queries: f64::NAN,
                    max_memory_mb,
                    avg_memory_mb,
                    memory_limit_mb: MEMORY_LIMIT_MB,
                    success_rate: totals.success_rate(),
                };
                optimization_opportunities
                    .extend(insights::recommendations(&input).into_iter().map(|r| recommendation_to_proto(r, name)));
            }
            optimization_opportunities.truncate(SYSTEM_LIST_LIMIT);

            let mut by_kind: Vec<AnomalyKindCount> = anomalies::open_by_kind(db)
                .await?
                .into_iter()
                .filter_map(|(kind, open)| Some(AnomalyKindCount { kind: anomaly_kind_to_proto(&kind)?, open }))
                .collect();
            by_kind.sort_by_key(|c| (std::cmp::Reverse(c.open), c.kind));
            let (since, until) = day.timestamps();
            Ok(SystemLearning {
                since,
                until,
                workers: rows.len() as i64,
                total_executions_24h: day_total.runs,
                average_score_24h: day_total.mean_overall(),
                success_rate_24h: day_total.success_rate(),
                busiest_hour,
                quietest_hour,
                runs_by_hour,
                workers_needing_attention: attention,
                optimization_opportunities,
                open_anomalies_by_kind: by_kind,
            })
        })
        .await
    }
}

/// A stored kind name as its wire enum value.
pub(crate) fn anomaly_kind_to_proto(kind: &str) -> Option<i32> {
    PbKind::from_str_name(&format!("ANOMALY_KIND_{kind}")).map(|k| k as i32)
}

/// Workers that are LATE or DOWN, have open critical anomalies, or failed too often in 24 h; the worst
/// first (DOWN, then LATE, then by how many reasons).
fn needing_attention(
    rows: &[WorkerRow],
    open: &[(i64, String, String)],
    day: &HashMap<i64, &Rollup>,
    now: DateTime<Utc>,
) -> Vec<WorkerAttention> {
    let mut critical: HashMap<i64, Vec<&str>> = HashMap::new();
    for (worker_id, kind, severity) in open {
        if severity == "CRITICAL" {
            critical.entry(*worker_id).or_default().push(kind);
        }
    }
    let mut out: Vec<(u8, WorkerAttention)> = Vec::new();
    for row in rows {
        let verdict = workers::verdict(row, now);
        let mut reasons = Vec::new();
        let rank = match verdict.health {
            WorkerHealth::Down => 3,
            WorkerHealth::Late => 2,
            _ => 0,
        };
        if rank > 0 {
            let last = row.last_run_at_us.map(|us| from_micros(us).format("%Y-%m-%d %H:%M UTC").to_string());
            reasons.push(format!(
                "{}: no run since {}",
                verdict.health.as_str(),
                last.unwrap_or_else(|| "its first report".into())
            ));
        }
        if let Some(kinds) = critical.get(&row.id) {
            let mut kinds = kinds.clone();
            kinds.sort_unstable();
            kinds.dedup();
            reasons.push(format!("{} open critical anomalies ({})", kinds.len(), kinds.join(", ")));
        }
        if let Some(r) = day.get(&row.id)
            && r.runs - r.skipped >= ATTENTION_MIN_RUNS
            && r.success_rate() < MIN_SUCCESS_RATE
        {
            reasons.push(format!(
                "success rate {:.1} % over {} runs in 24 h (target {:.0} %)",
                r.success_rate() * 100.0,
                r.runs - r.skipped,
                MIN_SUCCESS_RATE * 100.0
            ));
        }
        if !reasons.is_empty() {
            let severity = rank.max(u8::from(critical.contains_key(&row.id)));
            out.push((
                severity,
                WorkerAttention {
                    worker_name: row.worker_name.clone(),
                    health: health_to_proto(verdict.health.as_str()) as i32,
                    reasons,
                },
            ));
        }
    }
    out.sort_by(|(a, x), (b, y)| {
        b.cmp(a).then(y.reasons.len().cmp(&x.reasons.len())).then(x.worker_name.cmp(&y.worker_name))
    });
    out.into_iter().take(SYSTEM_LIST_LIMIT).map(|(_, w)| w).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::anomaly::AnomalyKind;

    #[test]
    fn anomaly_kinds_map_to_their_wire_numbers() {
        for kind in AnomalyKind::ALL {
            let wire = anomaly_kind_to_proto(kind.as_str()).unwrap();
            assert_eq!(PbKind::try_from(wire).unwrap().as_str_name(), format!("ANOMALY_KIND_{}", kind.as_str()));
        }
        assert_eq!(anomaly_kind_to_proto("NOPE"), None);
    }
}
