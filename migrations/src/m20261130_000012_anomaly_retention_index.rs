//! An index on `anomalies.resolved_at_us`, for retention. Its delete asks for resolved anomalies
//! older than the window; with no index leading with that column SQLite read the whole table
//! for it, inside the write transaction, on every pass. With 10 M executions loaded (and their
//! anomalies) that read took 2.7 s on the first pass after a restart, holding the one SQLite
//! write connection, and ingest batches waiting for it past the pool's acquire timeout were
//! refused as UNAVAILABLE. Now it is a range seek, over nothing when nothing is old enough.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261130_000012_anomaly_retention_index"
    }
}

#[derive(DeriveIden)]
enum Anomalies {
    Table,
    ResolvedAtUs,
}

const NAME: &str = "idx_anomalies_resolved";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(Index::create().name(NAME).table(Anomalies::Table).col(Anomalies::ResolvedAtUs).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(NAME).table(Anomalies::Table).to_owned()).await
    }
}
