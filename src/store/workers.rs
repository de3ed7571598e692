//! Queries on the `workers` table, and what a worker's row says about its schedule and health.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect,
};

use crate::domain::{
    schedule::Schedule,
    worker_settings::{self, Verdict, WorkerFacts, WorkerSettings},
};

use super::entities::workers::{self, Entity as Workers};

pub use workers::Model as WorkerRow;

pub async fn find_by_name(db: &impl ConnectionTrait, name: &str) -> Result<Option<WorkerRow>, DbErr> {
    Workers::find().filter(workers::Column::WorkerName.eq(name)).one(db).await
}

/// Up to `limit` workers ordered by name, strictly after `after` when given.
pub async fn list(db: &impl ConnectionTrait, after: Option<&str>, limit: u64) -> Result<Vec<WorkerRow>, DbErr> {
    let mut query = Workers::find().order_by_asc(workers::Column::WorkerName).limit(limit);
    if let Some(after) = after {
        query = query.filter(workers::Column::WorkerName.gt(after));
    }
    query.all(db).await
}

/// Worker names by id.
pub async fn names(db: &impl ConnectionTrait) -> Result<HashMap<i64, String>, DbErr> {
    let rows: Vec<(i64, String)> = Workers::find()
        .select_only()
        .column(workers::Column::Id)
        .column(workers::Column::WorkerName)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}

/// The worker's schedule, health and next deadline at `now`, from its row.
pub fn verdict(row: &WorkerRow, now: DateTime<Utc>) -> Verdict {
    let starts: Vec<DateTime<Utc>> =
        super::anomalies::decode_recent(row.recent_runs.as_deref()).iter().map(|r| r.started_at).collect();
    verdict_with_starts(row, &starts, now)
}

/// The schedule `row` declares, as of `at`.
pub fn declared_schedule(row: &WorkerRow, at: DateTime<Utc>) -> Option<Schedule> {
    worker_settings::declared(
        row.schedule_interval_secs,
        row.schedule_cron.as_deref(),
        row.schedule_grace_secs,
        row.paused,
        at,
    )
}

/// [`verdict`] with the recent starts already at hand (ingest keeps them decoded).
pub fn verdict_with_starts(row: &WorkerRow, starts: &[DateTime<Utc>], now: DateTime<Utc>) -> Verdict {
    let declared = declared_schedule(row, now);
    worker_settings::evaluate(
        &WorkerFacts {
            declared,
            paused: row.paused,
            recent_starts: starts,
            last_run_started: row.last_run_at_us.map(super::from_micros),
            resumed_at: row.resumed_at_us.map(super::from_micros),
        },
        now,
    )
}

/// Labels stored as a JSON object; an unreadable value reads as none.
pub fn labels(row: &WorkerRow) -> BTreeMap<String, String> {
    row.labels.as_deref().and_then(|json| serde_json::from_str(json).ok()).unwrap_or_default()
}

/// Creates the worker or replaces its declared settings, in `txn`. Returns the row as stored and its
/// health before the change (`None` when it was created).
pub async fn upsert_settings(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    settings: &WorkerSettings,
    now: DateTime<Utc>,
) -> Result<(WorkerRow, Option<String>), DbErr> {
    let mut query = Workers::find().filter(workers::Column::WorkerName.eq(settings.worker_name.as_str()));
    if backend == DbBackend::Postgres {
        query = query.lock_exclusive();
    }
    let existing = query.one(txn).await?;
    let previous_health = existing.as_ref().map(|row| row.health.clone());
    let now_us = super::to_micros(now);
    let mut row = match existing {
        Some(row) => row,
        None => {
            workers::ActiveModel {
                worker_name: Set(settings.worker_name.clone()),
                worker_type: Set(settings.worker_type.clone().unwrap_or_default()),
                first_seen_us: Set(now_us),
                last_seen_us: Set(now_us),
                last_outcome: Set(0),
                run_count: Set(0),
                ..Default::default()
            }
            .insert(txn)
            .await?
        }
    };
    if let Some(worker_type) = &settings.worker_type {
        row.worker_type.clone_from(worker_type);
    }
    row.schedule_interval_secs = settings.interval_secs;
    row.schedule_cron.clone_from(&settings.cron);
    row.schedule_grace_secs = settings.grace_secs;
    row.owner.clone_from(&settings.owner);
    row.description.clone_from(&settings.description);
    row.labels = (!settings.labels.is_empty()).then(|| serde_json::to_string(&settings.labels).unwrap_or_default());
    if let Some(paused) = settings.paused {
        if row.paused && !paused {
            row.resumed_at_us = Some(now_us);
        }
        row.paused = paused;
    }
    row.health = verdict(&row, now).health.as_str().to_owned();
    let row = row.into_active_model().reset_all().update(txn).await?;
    Ok((row, previous_health))
}

/// Deletes the worker and everything stored about it. Returns how many executions went with it, or
/// `None` when there was no such worker.
pub async fn delete(txn: &impl ConnectionTrait, name: &str) -> Result<Option<u64>, DbErr> {
    use super::entities::{anomalies, executions, worker_rollups};
    let Some(row) = find_by_name(txn, name).await? else {
        return Ok(None);
    };
    anomalies::Entity::delete_many().filter(anomalies::Column::WorkerId.eq(row.id)).exec(txn).await?;
    worker_rollups::Entity::delete_many().filter(worker_rollups::Column::WorkerId.eq(row.id)).exec(txn).await?;
    let executions = executions::Entity::delete_many()
        .filter(executions::Column::WorkerId.eq(row.id))
        .exec(txn)
        .await?
        .rows_affected;
    Workers::delete_by_id(row.id).exec(txn).await?;
    Ok(Some(executions))
}
