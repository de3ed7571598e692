//! Queries on the `workers` table.

use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use std::collections::HashMap;

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
