//! Queries on the `executions` table.

use prost::Message;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement, Value,
};

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

/// The columns [`insert_statements`] writes, in order (every column but the generated `id`).
const INSERT_COLUMNS: &str = "execution_id, worker_id, outcome, started_at_us, completed_at_us, duration_ms, \
     received_at_us, records_fetched, records_processed, records_failed, report, score_reliability, \
     score_performance, score_data_quality, score_resource_efficiency, score_overall, quality_level, \
     time_of_day_utc, day_of_week, execution_number_today, analysis";
const INSERT_COLUMN_COUNT: usize = 21;

/// Most rows in one INSERT statement (21 parameters each: well under SQLite's 32,766).
pub const MAX_ROWS_PER_INSERT: usize = 128;

/// The INSERT statements of `rows` (their `id` is ignored). Statements carry a power of two of
/// rows (128, then 64, 32, … for the rest), so their text takes one of eight shapes and each is
/// prepared once per connection and then found in the statement cache, instead of being parsed
/// anew for every batch size.
///
/// A row whose `execution_id` is already stored is skipped (`ON CONFLICT DO NOTHING`), not an
/// error: the rows the statements affected tell the caller whether every row went in.
pub fn insert_statements(backend: DbBackend, rows: Vec<ExecutionRow>) -> Vec<Statement> {
    let mut statements = Vec::with_capacity(rows.len().div_ceil(MAX_ROWS_PER_INSERT) + 7);
    let mut rows = rows.into_iter();
    let mut left = rows.len();
    while left > 0 {
        let n = chunk_rows(left);
        let mut values = Vec::with_capacity(n * INSERT_COLUMN_COUNT);
        for row in rows.by_ref().take(n) {
            values.extend(row_values(row));
        }
        statements.push(Statement::from_sql_and_values(backend, insert_sql(backend, n), values));
        left -= n;
    }
    statements
}

/// The rows of the next statement when `left` remain: the largest power of two that fits.
fn chunk_rows(left: usize) -> usize {
    let n = left.min(MAX_ROWS_PER_INSERT);
    1 << n.ilog2()
}

fn insert_sql(backend: DbBackend, rows: usize) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(112 + INSERT_COLUMNS.len() + rows * INSERT_COLUMN_COUNT * 5);
    let _ = write!(sql, "INSERT INTO executions ({INSERT_COLUMNS}) VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..INSERT_COLUMN_COUNT {
            if column > 0 {
                sql.push_str(", ");
            }
            match backend {
                DbBackend::Postgres => {
                    let _ = write!(sql, "${}", row * INSERT_COLUMN_COUNT + column + 1);
                }
                _ => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (execution_id) DO NOTHING");
    sql
}

fn row_values(row: ExecutionRow) -> [Value; INSERT_COLUMN_COUNT] {
    [
        row.execution_id.into(),
        row.worker_id.into(),
        row.outcome.into(),
        row.started_at_us.into(),
        row.completed_at_us.into(),
        row.duration_ms.into(),
        row.received_at_us.into(),
        row.records_fetched.into(),
        row.records_processed.into(),
        row.records_failed.into(),
        row.report.into(),
        row.score_reliability.into(),
        row.score_performance.into(),
        row.score_data_quality.into(),
        row.score_resource_efficiency.into(),
        row.score_overall.into(),
        row.quality_level.into(),
        row.time_of_day_utc.into(),
        row.day_of_week.into(),
        row.execution_number_today.into(),
        row.analysis.into(),
    ]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_that_add_up() {
        for total in 1..=1_000usize {
            let mut left = total;
            let mut statements = 0;
            while left > 0 {
                let n = chunk_rows(left);
                assert!(n.is_power_of_two() && n <= MAX_ROWS_PER_INSERT && n <= left, "{total}: {n} of {left}");
                left -= n;
                statements += 1;
            }
            // Full statements, then at most one of each smaller shape.
            assert!(statements <= total / MAX_ROWS_PER_INSERT + 7, "{total} rows took {statements} statements");
        }
    }

    #[test]
    fn insert_text_has_one_placeholder_per_value() {
        let sqlite = insert_sql(DbBackend::Sqlite, 3);
        assert_eq!(sqlite.matches('?').count(), 3 * INSERT_COLUMN_COUNT);
        assert_eq!(INSERT_COLUMNS.split(',').count(), INSERT_COLUMN_COUNT);
        let postgres = insert_sql(DbBackend::Postgres, 2);
        let last = format!("${}) ON CONFLICT (execution_id) DO NOTHING", 2 * INSERT_COLUMN_COUNT);
        assert!(postgres.ends_with(&last), "{postgres}");
        assert!(!postgres.contains('?'));
    }
}
