//! The missed-run detector: a background task that, every interval, looks at every worker's
//! schedule (declared, else inferred from regular runs) and last run, and
//! - records one MISSED_RUN anomaly per missed slot (never once per tick: each worker keeps the
//!   latest slot already recorded), resolved by the next report of the worker;
//! - publishes health changes (UP → LATE → DOWN) to WatchHealth watchers;
//! - opens and resolves FAILURE_RATE (the last 24 h against the previous 29 days, from rollups).
//!
//! The clock is injected, so tests drive a timeline by hand with [`Detector::run_once`]. With
//! several replicas on PostgreSQL a tick runs under an advisory transaction lock, so one replica at a
//! time does the work; the work is idempotent, so a replica taking over repeats nothing.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, sea_query::Expr};
use tokio::sync::watch;

use crate::{
    api::Clock,
    domain::{
        anomaly::{AnomalyConfig, AnomalyKind, failure_rate_finding, missed_run_findings},
        rollup::{Rollup, cover},
    },
    error::Error,
    store::{
        Store,
        anomalies::{self, NewAnomaly},
        entities::workers as worker_entity,
        ingest::{Ingest, health_change},
        rollups::{self, GroupBy},
        to_micros,
        workers::{self, WorkerRow},
    },
};

/// Key of the advisory lock that makes one replica run the detector at a time.
const DETECTOR_LOCK_KEY: i64 = 0x7277_6465_7465_6374; // "rwdetect"

/// How often the detector looks.
#[derive(Debug, Clone)]
pub struct DetectorConfig {
    pub interval: Duration,
    pub anomalies: AnomalyConfig,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig { interval: Duration::from_secs(30), anomalies: AnomalyConfig::default() }
    }
}

/// What one pass found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DetectorPass {
    pub workers: usize,
    pub missed_runs: usize,
    pub health_changes: usize,
    pub failure_rate_opened: usize,
    pub failure_rate_resolved: usize,
    /// False when another replica held the lock.
    pub ran: bool,
}

pub struct Detector {
    store: Store,
    ingest: Ingest,
    clock: Arc<dyn Clock>,
    config: DetectorConfig,
}

impl Detector {
    pub fn new(store: Store, ingest: Ingest, clock: Arc<dyn Clock>, config: DetectorConfig) -> Arc<Detector> {
        Arc::new(Detector { store, ingest, clock, config })
    }

    /// One pass over every worker at the clock's "now".
    pub async fn run_once(&self) -> Result<DetectorPass, Error> {
        let now = self.clock.now();
        let started = std::time::Instant::now();
        let txn = self.store.begin_write().await?;
        if !crate::store::try_singleton_lock(&txn, DETECTOR_LOCK_KEY).await? {
            txn.commit().await?;
            return Ok(DetectorPass::default());
        }
        let rows = worker_entity::Entity::find().all(&txn).await?;
        let mut pass = DetectorPass { workers: rows.len(), ran: true, ..Default::default() };
        let mut opened = Vec::new();
        let mut changes = Vec::new();
        let now_us = to_micros(now);
        for row in &rows {
            let verdict = workers::verdict(row, now);
            let health = verdict.health.as_str();
            let mut missed = Vec::new();
            if let (Some(schedule), Some(anchor)) = (&verdict.schedule, verdict.anchor)
                && !row.paused
            {
                let watermark = row.missed_through_us.unwrap_or(i64::MIN);
                for (slot, mut finding) in missed_run_findings(schedule, anchor, now) {
                    if to_micros(slot) > watermark {
                        if schedule.inferred {
                            finding.evidence.detail.push_str(" (schedule inferred from the recent runs)");
                        }
                        missed.push((slot, finding));
                    }
                }
            }
            if health == row.health && missed.is_empty() {
                continue;
            }
            let watermark = missed.iter().map(|(slot, _)| to_micros(*slot)).max().or(row.missed_through_us);
            // Only if no report changed the worker since it was read (a replica's ingest on PostgreSQL).
            let mut update = worker_entity::Entity::update_many()
                .col_expr(worker_entity::Column::Health, Expr::value(health))
                .col_expr(worker_entity::Column::MissedThroughUs, Expr::value(watermark))
                .filter(worker_entity::Column::Id.eq(row.id));
            update = match row.last_run_at_us {
                Some(us) => update.filter(worker_entity::Column::LastRunAtUs.eq(us)),
                None => update.filter(worker_entity::Column::LastRunAtUs.is_null()),
            };
            if update.exec(&txn).await?.rows_affected == 0 {
                continue;
            }
            if health != row.health {
                changes.push(health_change(&row.worker_name, &row.health, health, now));
            }
            for (slot, finding) in missed {
                tracing::info!(
                    worker = %row.worker_name,
                    slot = %slot,
                    severity = finding.severity.as_str(),
                    detail = %finding.evidence.detail,
                    "missed run"
                );
                opened.push(NewAnomaly {
                    worker_id: row.id,
                    finding,
                    opened_at_us: now_us,
                    resolved_at_us: None,
                    execution_id: None,
                });
                pass.missed_runs += 1;
            }
        }
        let (open_rate, resolve_rate) = self.failure_rates(&txn, &rows, now).await?;
        pass.failure_rate_opened = open_rate.len();
        pass.failure_rate_resolved = resolve_rate.len();
        opened.extend(open_rate);
        let mut resolved = Vec::new();
        for worker_id in resolve_rate {
            if anomalies::resolve(&txn, worker_id, AnomalyKind::FailureRate.as_str(), now_us).await? > 0 {
                resolved.push((worker_id, AnomalyKind::FailureRate.as_str().to_owned(), now_us));
            }
        }
        anomalies::insert(&txn, &opened).await?;
        let names: std::collections::HashMap<i64, String> =
            rows.iter().map(|r| (r.id, r.worker_name.clone())).collect();
        let events = crate::store::alerts::events_of(&opened, &resolved, &changes, &names);
        crate::store::alerts::record(&txn, &events, now_us).await?;
        crate::store::notify::send(&txn, self.store.replica(), &[], &changes).await?;
        txn.commit().await?;
        pass.health_changes = changes.len();
        self.ingest.publish_health(changes);
        metrics::histogram!("runwarden_detector_pass_seconds").record(started.elapsed().as_secs_f64());
        tracing::debug!(?pass, elapsed_ms = started.elapsed().as_millis() as u64, "detector pass");
        Ok(pass)
    }

    /// FAILURE_RATE per worker: which to open (not open yet and firing) and which to resolve (open and
    /// no longer firing).
    async fn failure_rates(
        &self,
        db: &impl ConnectionTrait,
        rows: &[WorkerRow],
        now: DateTime<Utc>,
    ) -> Result<(Vec<NewAnomaly>, Vec<i64>), Error> {
        let day = crate::api::stats::Window::last_hours(now, 24);
        let month = crate::api::stats::Window::last_hours(now, 30 * 24);
        let by_worker = |rows: Vec<(i64, Rollup)>| rows.into_iter().collect::<HashMap<_, _>>();
        let day_counts =
            by_worker(rollups::aggregate(db, None, &cover(day.since_us, day.until_us, true), GroupBy::Worker).await?);
        let month_counts = by_worker(
            rollups::aggregate(db, None, &cover(month.since_us, month.until_us, false), GroupBy::Worker).await?,
        );
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let open: std::collections::HashSet<i64> = anomalies::open_kinds(db, &ids)
            .await?
            .into_iter()
            .filter(|(_, kind)| kind == AnomalyKind::FailureRate.as_str())
            .map(|(id, _)| id)
            .collect();
        let (mut to_open, mut to_resolve) = (Vec::new(), Vec::new());
        let counts = |r: Option<&Rollup>| {
            r.map_or((0, 0), |r| {
                let judged = u64::try_from(r.runs - r.skipped).unwrap_or(0);
                (judged, u64::try_from(r.failed + r.timed_out).unwrap_or(0))
            })
        };
        for row in rows {
            let (day_runs, day_failures) = counts(day_counts.get(&row.id));
            let (month_runs, month_failures) = counts(month_counts.get(&row.id));
            let finding = failure_rate_finding(
                day_runs,
                day_failures,
                month_runs.max(day_runs),
                month_failures.max(day_failures),
                &self.config.anomalies,
            );
            match (finding, open.contains(&row.id)) {
                (Some(finding), false) => {
                    tracing::info!(worker = %row.worker_name, detail = %finding.evidence.detail, "failure rate");
                    to_open.push(NewAnomaly {
                        worker_id: row.id,
                        finding,
                        opened_at_us: to_micros(now),
                        resolved_at_us: None,
                        execution_id: None,
                    });
                }
                (None, true) => to_resolve.push(row.id),
                _ => {}
            }
        }
        Ok((to_open, to_resolve))
    }
}

/// Runs a pass every interval until `stop` fires.
pub async fn run(detector: Arc<Detector>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(detector.config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {
                if let Err(e) = detector.run_once().await {
                    tracing::warn!(error = %e, "missed-run detector pass failed");
                }
            }
        }
    }
}
