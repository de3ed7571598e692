//! Queries on the `executions` table.

use prost::Message;
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{
    entities::executions::{self, Entity as Executions},
    from_micros,
};
use crate::{
    domain::{page_token::ExecutionCursor, validation::to_timestamp},
    proto::v1::{Analysis, Execution, ExecutionReport},
};

pub use executions::Model as ExecutionRow;

/// What to list: every bound is optional.
#[derive(Debug, Default, Clone)]
pub struct ExecutionFilter {
    pub worker_id: Option<i64>,
    pub outcome: Option<i32>,
    /// Inclusive lower bound on `started_at`.
    pub since_us: Option<i64>,
    /// Exclusive upper bound on `started_at`.
    pub until_us: Option<i64>,
}

pub async fn find_by_execution_id(db: &impl ConnectionTrait, id: &str) -> Result<Option<ExecutionRow>, DbErr> {
    Executions::find().filter(executions::Column::ExecutionId.eq(id)).one(db).await
}

/// Newest first (by `started_at`, then insertion order), strictly older than `cursor`.
pub async fn list(
    db: &impl ConnectionTrait,
    filter: &ExecutionFilter,
    cursor: Option<ExecutionCursor>,
    limit: u64,
) -> Result<Vec<ExecutionRow>, DbErr> {
    use executions::Column as C;
    let mut query = Executions::find();
    if let Some(worker_id) = filter.worker_id {
        query = query.filter(C::WorkerId.eq(worker_id));
    }
    if let Some(outcome) = filter.outcome {
        query = query.filter(C::Outcome.eq(outcome));
    }
    if let Some(since) = filter.since_us {
        query = query.filter(C::StartedAtUs.gte(since));
    }
    if let Some(until) = filter.until_us {
        query = query.filter(C::StartedAtUs.lt(until));
    }
    if let Some(c) = cursor {
        query = query.filter(
            Condition::any()
                .add(C::StartedAtUs.lt(c.started_at_us))
                .add(Condition::all().add(C::StartedAtUs.eq(c.started_at_us)).add(C::Id.lt(c.id))),
        );
    }
    query.order_by_desc(C::StartedAtUs).order_by_desc(C::Id).limit(limit).all(db).await
}

/// Existing execution ids among `ids`.
pub async fn existing_ids(db: &impl ConnectionTrait, ids: &[&str]) -> Result<Vec<String>, DbErr> {
    let mut found = Vec::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<String> = Executions::find()
            .select_only()
            .column(executions::Column::ExecutionId)
            .filter(executions::Column::ExecutionId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        found.extend(rows);
    }
    Ok(found)
}

impl ExecutionRow {
    /// The stored execution as the API returns it. Fails only if the stored bytes are corrupt.
    pub fn to_proto(&self) -> Result<Execution, prost::DecodeError> {
        let report = ExecutionReport::decode(self.report.as_slice())?;
        let analysis = self.analysis()?;
        Ok(Execution {
            execution_id: self.execution_id.clone(),
            report: Some(report),
            received_at: Some(to_timestamp(from_micros(self.received_at_us))),
            scores: analysis.scores,
            quality_level: analysis.quality_level,
            reasons: analysis.reasons,
            weights: analysis.weights,
            learning: analysis.learning,
        })
    }

    /// What the server computed when it stored the execution.
    pub fn analysis(&self) -> Result<Analysis, prost::DecodeError> {
        self.analysis.as_deref().map(Analysis::decode).transpose().map(Option::unwrap_or_default)
    }
}

/// `(duration_ms, score_overall)` of a worker's most recent runs, newest first.
pub async fn recent_runs(db: &impl ConnectionTrait, worker_id: i64, limit: u64) -> Result<Vec<(i64, f64)>, DbErr> {
    Executions::find()
        .select_only()
        .column(executions::Column::DurationMs)
        .column(executions::Column::ScoreOverall)
        .filter(executions::Column::WorkerId.eq(worker_id))
        .order_by_desc(executions::Column::StartedAtUs)
        .order_by_desc(executions::Column::Id)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await
}

/// The reports of a worker's most recent runs, newest first (unreadable ones are skipped).
pub async fn recent_reports(
    db: &impl ConnectionTrait,
    worker_id: i64,
    limit: u64,
) -> Result<Vec<crate::proto::v1::ExecutionReport>, DbErr> {
    use prost::Message;
    let blobs: Vec<Vec<u8>> = Executions::find()
        .select_only()
        .column(executions::Column::Report)
        .filter(executions::Column::WorkerId.eq(worker_id))
        .order_by_desc(executions::Column::StartedAtUs)
        .order_by_desc(executions::Column::Id)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    Ok(blobs.iter().filter_map(|b| crate::proto::v1::ExecutionReport::decode(b.as_slice()).ok()).collect())
}

/// The executions with these ids (any order; unknown ids are skipped).
pub async fn find_many(db: &impl ConnectionTrait, ids: &[String]) -> Result<Vec<ExecutionRow>, DbErr> {
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        rows.extend(
            Executions::find()
                .filter(executions::Column::ExecutionId.is_in(chunk.iter().map(String::as_str)))
                .all(db)
                .await?,
        );
    }
    Ok(rows)
}
