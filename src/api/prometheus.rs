//! What `/metrics` exports beside the process's own counters and histograms: runwarden's
//! judgement per worker (last run, outcome, score, 24 h success rate, health, open anomalies by
//! kind) and the guardian's latest tick, so existing Prometheus, Grafana and Alertmanager setups
//! can alert on it. Computed from the database at scrape time, so a deleted worker's series
//! disappear with it. Label values are worker names, outcome, health state, anomaly kind and stream
//! type only; at most [`MAX_EXPORTED_WORKERS`] workers (by name) are exported, and
//! `runwarden_workers` says how many exist.

use std::{collections::BTreeMap, fmt::Write, sync::Arc};

use super::{Services, stats::Window};
use crate::{
    domain::{rollup::cover, schedule::WorkerHealth},
    error::Error,
    proto::v1::{GuardianStatus, Outcome},
    store::{
        anomalies,
        rollups::{self, GroupBy},
        workers,
    },
};

/// Workers exported per scrape (label cardinality bound).
pub const MAX_EXPORTED_WORKERS: u64 = 1000;

const HEALTH_STATES: [WorkerHealth; 5] =
    [WorkerHealth::New, WorkerHealth::Up, WorkerHealth::Late, WorkerHealth::Down, WorkerHealth::Paused];

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The per-worker and guardian sections, in Prometheus text format.
pub async fn render(services: &Arc<Services>) -> Result<String, Error> {
    let db = services.store.reader();
    let now = services.clock.now();
    let rows = workers::list(db, None, MAX_EXPORTED_WORKERS).await?;
    let total = workers::names(db).await?.len();
    let day = Window::last_hours(now, 24);
    let last_day: BTreeMap<i64, _> =
        rollups::aggregate(db, None, &cover(day.since_us, day.until_us, true), GroupBy::Worker)
            .await?
            .into_iter()
            .collect();
    let mut open: BTreeMap<(i64, String), u64> = BTreeMap::new();
    for (worker_id, kind, _) in anomalies::open_all(db).await? {
        *open.entry((worker_id, kind)).or_default() += 1;
    }
    let mut out = String::with_capacity(256 * rows.len() + 1024);
    header(&mut out, "runwarden_workers", "gauge", "Workers known to runwarden (exported: at most 1000, by name).");
    let _ = writeln!(out, "runwarden_workers {total}");

    header(&mut out, "runwarden_worker_last_run_timestamp_seconds", "gauge", "Start of the worker's latest run.");
    for row in rows.iter() {
        if let Some(us) = row.last_run_at_us {
            let _ = writeln!(
                out,
                "runwarden_worker_last_run_timestamp_seconds{{worker=\"{}\"}} {}",
                label(&row.worker_name),
                us as f64 / 1e6
            );
        }
    }
    header(&mut out, "runwarden_worker_last_outcome", "gauge", "1 for the outcome of the worker's latest run.");
    for row in rows.iter().filter(|r| r.run_count > 0) {
        let outcome = Outcome::try_from(row.last_outcome).unwrap_or(Outcome::Unspecified).as_str_name();
        let outcome = outcome.trim_start_matches("OUTCOME_");
        let _ = writeln!(
            out,
            "runwarden_worker_last_outcome{{worker=\"{}\",outcome=\"{outcome}\"}} 1",
            label(&row.worker_name)
        );
    }
    header(&mut out, "runwarden_worker_last_overall_score", "gauge", "Overall score 0-100 of the latest run.");
    for row in rows.iter().filter(|r| r.run_count > 0) {
        let _ = writeln!(
            out,
            "runwarden_worker_last_overall_score{{worker=\"{}\"}} {}",
            label(&row.worker_name),
            row.last_overall_score
        );
    }
    header(&mut out, "runwarden_worker_runs_24h", "gauge", "Runs that started in the last 24 hours.");
    header(&mut out, "runwarden_worker_success_rate_24h", "gauge", "Successful over non-skipped runs, last 24 h.");
    for row in &rows {
        let rollup = last_day.get(&row.id);
        let _ = writeln!(
            out,
            "runwarden_worker_runs_24h{{worker=\"{}\"}} {}",
            label(&row.worker_name),
            rollup.map_or(0, |r| r.runs)
        );
        if let Some(r) = rollup.filter(|r| r.runs > r.skipped) {
            let _ = writeln!(
                out,
                "runwarden_worker_success_rate_24h{{worker=\"{}\"}} {}",
                label(&row.worker_name),
                r.success_rate()
            );
        }
    }
    header(&mut out, "runwarden_worker_health", "gauge", "1 for the worker's current health state, 0 for the others.");
    for row in &rows {
        let health = workers::verdict(row, now).health;
        for state in HEALTH_STATES {
            let _ = writeln!(
                out,
                "runwarden_worker_health{{worker=\"{}\",state=\"{}\"}} {}",
                label(&row.worker_name),
                state.as_str(),
                u8::from(state == health)
            );
        }
    }
    header(&mut out, "runwarden_worker_open_anomalies", "gauge", "Open anomalies of the worker, by kind.");
    let names: BTreeMap<i64, &str> = rows.iter().map(|r| (r.id, r.worker_name.as_str())).collect();
    for ((worker_id, kind), count) in &open {
        if let Some(name) = names.get(worker_id) {
            let _ = writeln!(
                out,
                "runwarden_worker_open_anomalies{{worker=\"{}\",kind=\"{}\"}} {count}",
                label(name),
                label(kind)
            );
        }
    }
    guardian_section(&mut out, &services.guardian.status());
    Ok(out)
}

fn guardian_section(out: &mut String, status: &GuardianStatus) {
    header(out, "runwarden_guardian_streams", "gauge", "Tracked streams by state at the latest guardian tick.");
    for (state, n) in [
        ("active", status.active_streams),
        ("healthy", status.healthy_streams),
        ("stale", status.stale_streams),
        ("orphaned", status.orphaned_streams),
        ("cleaned", status.cleaned_streams),
    ] {
        let _ = writeln!(out, "runwarden_guardian_streams{{state=\"{state}\"}} {n}");
    }
    header(out, "runwarden_guardian_orphan_rate", "gauge", "Orphaned over active streams at the latest tick.");
    let _ = writeln!(out, "runwarden_guardian_orphan_rate {}", status.orphan_rate);
    header(out, "runwarden_guardian_orphaned_by_type", "gauge", "Orphaned streams by stream type at the latest tick.");
    for (stream_type, n) in &status.orphaned_by_type {
        let _ = writeln!(out, "runwarden_guardian_orphaned_by_type{{type=\"{}\"}} {n}", label(stream_type));
    }
    header(out, "runwarden_guardian_warnings", "gauge", "Warnings raised by the latest tick.");
    let _ = writeln!(out, "runwarden_guardian_warnings {}", status.warnings.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(label("intel_news_fetcher"), "intel_news_fetcher");
    }
}
