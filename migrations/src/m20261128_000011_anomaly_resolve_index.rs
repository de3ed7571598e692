//! An index that makes resolving a worker's open anomalies of one kind a seek. Without it,
//! SQLite's planner (which has no statistics) answered `worker_id = ? AND kind = ? AND
//! resolved_at_us IS NULL AND opened_at_us <= ?` from `(worker_id, opened_at_us)`: every anomaly
//! the worker ever had, read row by row, in every ingest batch, so ingest slowed as history grew.
//! With all four columns here, equality on three and the range on the last, it is the plan.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000011_anomaly_resolve_index"
    }
}

#[derive(DeriveIden)]
enum Anomalies {
    Table,
    WorkerId,
    Kind,
    ResolvedAtUs,
    OpenedAtUs,
}

const NAME: &str = "idx_anomalies_worker_kind_open";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(NAME)
                    .table(Anomalies::Table)
                    .col(Anomalies::WorkerId)
                    .col(Anomalies::Kind)
                    .col(Anomalies::ResolvedAtUs)
                    .col(Anomalies::OpenedAtUs)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(NAME).table(Anomalies::Table).to_owned()).await
    }
}
