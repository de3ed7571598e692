//! Queries on `worker_hourly`: load and save the rollups the ingest transaction folds executions
//! into, read a window of them, and rebuild them all from raw executions.

use std::collections::{BTreeMap, HashMap};

use prost::Message;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::{
    Store,
    entities::{executions, worker_hourly},
};
use crate::{
    domain::{
        rollup::{ExecutionFacts, HourlyRollup, hour_start},
        sketch::DurationSketch,
    },
    proto::v1::{Analysis, ExecutionReport},
};

/// (worker id, hour start in µs).
pub type RollupKey = (i64, i64);

const INSERT_CHUNK: usize = 100;

fn to_domain(m: worker_hourly::Model) -> Result<(RollupKey, HourlyRollup), DbErr> {
    let durations = DurationSketch::decode(&m.durations).map_err(|e| {
        DbErr::Custom(format!("corrupt duration sketch for worker {} hour {}: {e}", m.worker_id, m.hour_start_us))
    })?;
    Ok((
        (m.worker_id, m.hour_start_us),
        HourlyRollup {
            runs: m.runs,
            successful: m.successful,
            partial: m.partial,
            failed: m.failed,
            timed_out: m.timed_out,
            skipped: m.skipped,
            duration_sum_ms: m.duration_sum_ms,
            duration_sumsq: m.duration_sumsq,
            duration_max_ms: m.duration_max_ms,
            reliability_sum: m.reliability_sum,
            performance_sum: m.performance_sum,
            data_quality_sum: m.data_quality_sum,
            resource_efficiency_sum: m.resource_efficiency_sum,
            overall_sum: m.overall_sum,
            overall_sumsq: m.overall_sumsq,
            records_fetched: m.records_fetched,
            records_processed: m.records_processed,
            records_failed: m.records_failed,
            validation_passed: m.validation_passed,
            validation_failed: m.validation_failed,
            rate_limited_runs: m.rate_limited_runs,
            missing_fields: m.missing_fields,
            newest_record_age_max: m.newest_record_age_max,
            durations,
        },
    ))
}

fn to_model((worker_id, hour_start_us): RollupKey, r: &HourlyRollup) -> worker_hourly::Model {
    worker_hourly::Model {
        worker_id,
        hour_start_us,
        runs: r.runs,
        successful: r.successful,
        partial: r.partial,
        failed: r.failed,
        timed_out: r.timed_out,
        skipped: r.skipped,
        duration_sum_ms: r.duration_sum_ms,
        duration_sumsq: r.duration_sumsq,
        duration_max_ms: r.duration_max_ms,
        reliability_sum: r.reliability_sum,
        performance_sum: r.performance_sum,
        data_quality_sum: r.data_quality_sum,
        resource_efficiency_sum: r.resource_efficiency_sum,
        overall_sum: r.overall_sum,
        overall_sumsq: r.overall_sumsq,
        records_fetched: r.records_fetched,
        records_processed: r.records_processed,
        records_failed: r.records_failed,
        validation_passed: r.validation_passed,
        validation_failed: r.validation_failed,
        rate_limited_runs: r.rate_limited_runs,
        missing_fields: r.missing_fields,
        newest_record_age_max: r.newest_record_age_max,
        durations: r.durations.encode(),
    }
}

/// Rollups being updated inside one transaction: the rows loaded for the keys a batch touches,
/// folded in memory, then written back.
#[derive(Default)]
pub struct PendingRollups {
    rows: HashMap<RollupKey, (HourlyRollup, bool)>,
}

impl PendingRollups {
    /// Loads the existing rows for `keys` (the bool marks rows that already exist).
    pub async fn load(db: &impl ConnectionTrait, keys: &[RollupKey]) -> Result<PendingRollups, DbErr> {
        let mut rows = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(200) {
            let mut any = Condition::any();
            for &(worker_id, hour) in chunk {
                any = any.add(
                    Condition::all()
                        .add(worker_hourly::Column::WorkerId.eq(worker_id))
                        .add(worker_hourly::Column::HourStartUs.eq(hour)),
                );
            }
            for model in worker_hourly::Entity::find().filter(any).all(db).await? {
                let (key, rollup) = to_domain(model)?;
                rows.insert(key, (rollup, true));
            }
        }
        Ok(PendingRollups { rows })
    }

    pub fn observe(&mut self, worker_id: i64, facts: &ExecutionFacts) {
        let key = (worker_id, hour_start(facts.started_at_us));
        self.rows.entry(key).or_insert_with(|| (HourlyRollup::default(), false)).0.observe(facts);
    }

    pub async fn save(self, db: &impl ConnectionTrait) -> Result<(), DbErr> {
        let mut inserts = Vec::new();
        for (key, (rollup, exists)) in self.rows {
            let model = to_model(key, &rollup);
            if exists {
                model.into_active_model().reset_all().update(db).await?;
            } else {
                inserts.push(model.into_active_model());
            }
        }
        let mut pending = inserts.into_iter().peekable();
        while pending.peek().is_some() {
            let chunk: Vec<_> = pending.by_ref().take(INSERT_CHUNK).collect();
            worker_hourly::Entity::insert_many(chunk).exec_without_returning(db).await?;
        }
        Ok(())
    }
}

/// Rollup rows in `[since_us, until_us)`, for one worker or all, oldest first.
pub async fn window(
    db: &impl ConnectionTrait,
    worker_id: Option<i64>,
    since_us: i64,
    until_us: i64,
) -> Result<Vec<(RollupKey, HourlyRollup)>, DbErr> {
    let mut query = worker_hourly::Entity::find()
        .filter(worker_hourly::Column::HourStartUs.gte(since_us))
        .filter(worker_hourly::Column::HourStartUs.lt(until_us));
    if let Some(worker_id) = worker_id {
        query = query.filter(worker_hourly::Column::WorkerId.eq(worker_id));
    }
    query.order_by_asc(worker_hourly::Column::HourStartUs).all(db).await?.into_iter().map(to_domain).collect()
}

/// Every rollup row, keyed, for comparisons (tests, `rollup verify`).
pub async fn all(db: &impl ConnectionTrait) -> Result<BTreeMap<RollupKey, HourlyRollup>, DbErr> {
    worker_hourly::Entity::find().all(db).await?.into_iter().map(to_domain).collect()
}

/// The facts of a stored execution row.
pub fn facts_of(row: &executions::Model) -> Result<ExecutionFacts, DbErr> {
    let corrupt = |e: prost::DecodeError| DbErr::Custom(format!("corrupt execution {}: {e}", row.execution_id));
    let report = ExecutionReport::decode(row.report.as_slice()).map_err(corrupt)?;
    let analysis = row.analysis.as_deref().map(Analysis::decode).transpose().map_err(corrupt)?.unwrap_or_default();
    Ok(ExecutionFacts::from_report(&report, &analysis.scores.unwrap_or_default(), row.started_at_us))
}

/// Recomputes every rollup from raw executions, in storage order, in one write transaction.
/// Returns the number of executions read.
pub async fn rebuild(store: &Store) -> Result<u64, DbErr> {
    let txn = store.begin_write().await?;
    worker_hourly::Entity::delete_many().exec(&txn).await?;
    let mut rollups: BTreeMap<RollupKey, HourlyRollup> = BTreeMap::new();
    let mut last_id = i64::MIN;
    let mut read = 0u64;
    loop {
        let rows = executions::Entity::find()
            .filter(executions::Column::Id.gt(last_id))
            .order_by_asc(executions::Column::Id)
            .limit(5000)
            .all(&txn)
            .await?;
        let Some(last) = rows.last() else { break };
        last_id = last.id;
        for row in &rows {
            let facts = facts_of(row)?;
            rollups.entry((row.worker_id, hour_start(facts.started_at_us))).or_default().observe(&facts);
        }
        read += rows.len() as u64;
    }
    let models: Vec<_> = rollups.iter().map(|(key, r)| to_model(*key, r).into_active_model()).collect();
    let mut pending = models.into_iter().peekable();
    while pending.peek().is_some() {
        let chunk: Vec<_> = pending.by_ref().take(INSERT_CHUNK).collect();
        worker_hourly::Entity::insert_many(chunk).exec_without_returning(&txn).await?;
    }
    txn.commit().await?;
    Ok(read)
}
