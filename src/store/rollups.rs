//! Queries on `worker_rollups`: load and save the rollups the ingest transaction folds executions
//! into (an hour row and a day row per execution), aggregate a window of them inside the
//! database, and rebuild them all from raw executions.

use std::collections::BTreeMap;

use prost::Message;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};

use super::{
    FastMap, Store,
    entities::{executions, worker_rollups},
};
use crate::{
    domain::{
        rollup::{Cover, DAY_US, ExecutionFacts, HOUR_US, Period, Rollup},
        sketch::DurationSketch,
    },
    proto::v1::{Analysis, ExecutionReport},
};

/// (worker id, period, period start in µs).
pub type RollupKey = (i64, Period, i64);

const INSERT_CHUNK: usize = 100;

fn to_domain(m: worker_rollups::Model) -> Result<(RollupKey, Rollup), DbErr> {
    let corrupt =
        |what: &str| DbErr::Custom(format!("corrupt rollup of worker {} at {}: {what}", m.worker_id, m.start_us));
    let durations = DurationSketch::decode(&m.durations).map_err(corrupt)?;
    let period = Period::from_code(m.period).ok_or_else(|| corrupt("unknown period"))?;
    Ok((
        (m.worker_id, period, m.start_us),
        Rollup {
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

fn to_model((worker_id, period, start_us): RollupKey, r: &Rollup) -> worker_rollups::Model {
    worker_rollups::Model {
        worker_id,
        period: period.code(),
        start_us,
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
    rows: FastMap<RollupKey, Rollup>,
}

impl PendingRollups {
    /// Loads the existing rows for `keys`: from `known` where it holds them (rows exactly as the
    /// database holds them, which the caller vouches for), the rest from the database.
    pub async fn load(
        db: &impl ConnectionTrait,
        keys: &[RollupKey],
        known: &FastMap<RollupKey, Rollup>,
    ) -> Result<PendingRollups, DbErr> {
        let mut rows = FastMap::with_capacity_and_hasher(keys.len(), Default::default());
        let mut unknown = Vec::new();
        for key in keys {
            match known.get(key) {
                Some(rollup) => {
                    rows.insert(*key, rollup.clone());
                }
                None => unknown.push(*key),
            }
        }
        for chunk in unknown.chunks(200) {
            let mut any = Condition::any();
            for &(worker_id, period, start) in chunk {
                any = any.add(
                    Condition::all()
                        .add(worker_rollups::Column::WorkerId.eq(worker_id))
                        .add(worker_rollups::Column::Period.eq(period.code()))
                        .add(worker_rollups::Column::StartUs.eq(start)),
                );
            }
            for model in worker_rollups::Entity::find().filter(any).all(db).await? {
                let (key, rollup) = to_domain(model)?;
                rows.insert(key, rollup);
            }
        }
        Ok(PendingRollups { rows })
    }

    /// Folds one execution into its hour and its day.
    pub fn observe(&mut self, worker_id: i64, facts: &ExecutionFacts) {
        for period in Period::ALL {
            let key = (worker_id, period, period.start(facts.started_at_us));
            self.rows.entry(key).or_default().observe(facts);
        }
    }

    /// The rollup rows an execution of `worker_id` starting at `started_at_us` folds into.
    pub fn keys_of(worker_id: i64, started_at_us: i64) -> impl Iterator<Item = RollupKey> {
        Period::ALL.into_iter().map(move |p| (worker_id, p, p.start(started_at_us)))
    }

    /// Writes every touched row back with one upsert statement per chunk: new rows are inserted,
    /// existing ones get the values folded here (never a read-modify-write in SQL).
    pub async fn save(&self, db: &impl ConnectionTrait) -> Result<(), DbErr> {
        let models: Vec<_> = self.rows.iter().map(|(key, rollup)| to_model(*key, rollup).into_active_model()).collect();
        upsert(db, models).await
    }

    /// The rows as [`PendingRollups::save`] writes them.
    pub fn into_rows(self) -> FastMap<RollupKey, Rollup> {
        self.rows
    }
}

async fn upsert(db: &impl ConnectionTrait, models: Vec<worker_rollups::ActiveModel>) -> Result<(), DbErr> {
    use sea_orm::{Iterable, sea_query::OnConflict};
    use worker_rollups::Column as C;
    let key = [C::WorkerId, C::Period, C::StartUs];
    let values: Vec<C> = C::iter().filter(|c| !matches!(c, C::WorkerId | C::Period | C::StartUs)).collect();
    let mut pending = models.into_iter().peekable();
    while pending.peek().is_some() {
        let chunk: Vec<_> = pending.by_ref().take(INSERT_CHUNK).collect();
        worker_rollups::Entity::insert_many(chunk)
            .on_conflict(OnConflict::columns(key).update_columns(values.iter().copied()).to_owned())
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Every rollup row, keyed, for comparisons (tests, `rollup verify`).
pub async fn all(db: &impl ConnectionTrait) -> Result<BTreeMap<RollupKey, Rollup>, DbErr> {
    worker_rollups::Entity::find().all(db).await?.into_iter().map(to_domain).collect()
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
    worker_rollups::Entity::delete_many().exec(&txn).await?;
    let mut rollups: BTreeMap<RollupKey, Rollup> = BTreeMap::new();
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
            for key in PendingRollups::keys_of(row.worker_id, facts.started_at_us) {
                rollups.entry(key).or_default().observe(&facts);
            }
        }
        read += rows.len() as u64;
    }
    upsert(&txn, rollups.iter().map(|(key, r)| to_model(*key, r).into_active_model()).collect()).await?;
    txn.commit().await?;
    Ok(read)
}

/// How [`aggregate`] groups rollup rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Worker,
    /// Buckets of this many microseconds (an hour or a day), keyed by their start.
    Bucket(i64),
    /// Hour of the day 0-23 (UTC) of hourly rows.
    HourOfDay,
    /// Weekday 0-6, 0 = Monday, of hourly rows.
    Weekday,
    /// `worker_id × 24 + hour of the day` of hourly rows.
    WorkerHourOfDay,
}

/// Sums rollup rows in `[since_us, until_us)` inside the database, grouped as asked: the rows are
/// never materialized, so a 90-day window costs one indexed aggregate. The duration sketches are
/// not merged here (see [`durations`]).
pub async fn aggregate(
    db: &impl ConnectionTrait,
    worker_id: Option<i64>,
    cover: &Cover,
    group: GroupBy,
) -> Result<Vec<(i64, Rollup)>, DbErr> {
    // Only integers are interpolated into the statement.
    let key = match group {
        GroupBy::Worker => "worker_id".to_owned(),
        GroupBy::Bucket(size) => format!("(start_us / {size}) * {size}"),
        GroupBy::HourOfDay => format!("(start_us / {HOUR_US}) % 24"),
        // 1970-01-01 was a Thursday (3 with Monday = 0).
        GroupBy::Weekday => format!("((start_us / {DAY_US}) + 3) % 7"),
        GroupBy::WorkerHourOfDay => format!("worker_id * 24 + (start_us / {HOUR_US}) % 24"),
    };
    let worker_filter = worker_id.map(|id| format!(" AND worker_id = {id}")).unwrap_or_default();
    let ranges = cover_condition(cover);
    let sql = format!(
        "SELECT {key} AS k, \
         CAST(SUM(runs) AS BIGINT), CAST(SUM(successful) AS BIGINT), CAST(SUM(partial) AS BIGINT), \
         CAST(SUM(failed) AS BIGINT), CAST(SUM(timed_out) AS BIGINT), CAST(SUM(skipped) AS BIGINT), \
         CAST(SUM(duration_sum_ms) AS BIGINT), MAX(duration_max_ms), \
         CAST(SUM(records_fetched) AS BIGINT), CAST(SUM(records_processed) AS BIGINT), \
         CAST(SUM(records_failed) AS BIGINT), CAST(SUM(validation_passed) AS BIGINT), \
         CAST(SUM(validation_failed) AS BIGINT), CAST(SUM(rate_limited_runs) AS BIGINT), \
         CAST(SUM(missing_fields) AS BIGINT), \
         SUM(duration_sumsq), SUM(reliability_sum), SUM(performance_sum), SUM(data_quality_sum), \
         SUM(resource_efficiency_sum), SUM(overall_sum), SUM(overall_sumsq), MAX(newest_record_age_max) \
         FROM worker_rollups WHERE ({ranges}){worker_filter} \
         GROUP BY k ORDER BY k"
    );
    let rows = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await?;
    rows.iter()
        .map(|row| {
            let int = |i: usize| row.try_get_by_index::<i64>(i);
            let float = |i: usize| row.try_get_by_index::<f64>(i);
            Ok((
                int(0)?,
                Rollup {
                    runs: int(1)?,
                    successful: int(2)?,
                    partial: int(3)?,
                    failed: int(4)?,
                    timed_out: int(5)?,
                    skipped: int(6)?,
                    duration_sum_ms: int(7)?,
                    duration_max_ms: int(8)?,
                    records_fetched: int(9)?,
                    records_processed: int(10)?,
                    records_failed: int(11)?,
                    validation_passed: int(12)?,
                    validation_failed: int(13)?,
                    rate_limited_runs: int(14)?,
                    missing_fields: int(15)?,
                    duration_sumsq: float(16)?,
                    reliability_sum: float(17)?,
                    performance_sum: float(18)?,
                    data_quality_sum: float(19)?,
                    resource_efficiency_sum: float(20)?,
                    overall_sum: float(21)?,
                    overall_sumsq: float(22)?,
                    newest_record_age_max: row.try_get_by_index::<Option<f64>>(23)?,
                    durations: DurationSketch::default(),
                },
            ))
        })
        .collect()
}

/// `(period = p AND start_us >= a AND start_us < b) OR ...` for a cover (integers only).
fn cover_condition(cover: &Cover) -> String {
    let ranges: Vec<String> = cover
        .iter()
        .map(|(period, from, to)| format!("(period = {} AND start_us >= {from} AND start_us < {to})", period.code()))
        .collect();
    if ranges.is_empty() { "1 = 0".to_owned() } else { ranges.join(" OR ") }
}

/// The merged duration sketch of one worker over a cover.
pub async fn durations(db: &impl ConnectionTrait, worker_id: i64, cover: &Cover) -> Result<DurationSketch, DbErr> {
    let mut any = Condition::any();
    for (period, from, to) in cover {
        any = any.add(
            Condition::all()
                .add(worker_rollups::Column::Period.eq(period.code()))
                .add(worker_rollups::Column::StartUs.gte(*from))
                .add(worker_rollups::Column::StartUs.lt(*to)),
        );
    }
    let blobs: Vec<Vec<u8>> = worker_rollups::Entity::find()
        .select_only()
        .column(worker_rollups::Column::Durations)
        .filter(worker_rollups::Column::WorkerId.eq(worker_id))
        .filter(any)
        .into_tuple()
        .all(db)
        .await?;
    let mut merged = DurationSketch::default();
    for blob in blobs {
        merged
            .merge_encoded(&blob)
            .map_err(|e| DbErr::Custom(format!("corrupt duration sketch of worker {worker_id}: {e}")))?;
    }
    Ok(merged)
}
