//! Anomalies found in runs, and each worker's recent runs that detection compares a new run with.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000005_anomalies"
    }
}

#[derive(DeriveIden)]
enum Anomalies {
    Table,
    Id,
    WorkerId,
    Kind,
    Severity,
    Evidence,
    OpenedAtUs,
    ResolvedAtUs,
    ExecutionId,
}

#[derive(DeriveIden)]
enum Workers {
    Table,
    Id,
    RecentRuns,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Anomalies::Table)
                    .col(big_pk_auto(Anomalies::Id))
                    .col(big_integer(Anomalies::WorkerId))
                    .col(string_len(Anomalies::Kind, 32))
                    .col(string_len(Anomalies::Severity, 16))
                    .col(text(Anomalies::Evidence))
                    .col(big_integer(Anomalies::OpenedAtUs))
                    .col(big_integer_null(Anomalies::ResolvedAtUs))
                    .col(string_len_null(Anomalies::ExecutionId, 36))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_anomalies_worker")
                            .from(Anomalies::Table, Anomalies::WorkerId)
                            .to(Workers::Table, Workers::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_anomalies_worker_opened")
                    .table(Anomalies::Table)
                    .col(Anomalies::WorkerId)
                    .col(Anomalies::OpenedAtUs)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_anomalies_opened")
                    .table(Anomalies::Table)
                    .col(Anomalies::OpenedAtUs)
                    .to_owned(),
            )
            .await?;
        // Ingest asks, per batch, which of its workers have open anomalies, and resolves them: both
        // seek (worker, NULL) here instead of scanning every anomaly the worker ever had.
        manager
            .create_index(
                Index::create()
                    .name("idx_anomalies_worker_open")
                    .table(Anomalies::Table)
                    .col(Anomalies::WorkerId)
                    .col(Anomalies::ResolvedAtUs)
                    .col(Anomalies::Kind)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Workers::Table)
                    .add_column(ColumnDef::new(Workers::RecentRuns).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Workers::Table).drop_column(Workers::RecentRuns).to_owned()).await?;
        manager.drop_table(Table::drop().table(Anomalies::Table).to_owned()).await
    }
}
