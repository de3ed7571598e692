//! Workers and their executions. Times are microseconds since the Unix epoch (UTC) in BIGINT
//! columns: compact, portable between SQLite and PostgreSQL, and index-friendly.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000001_initial"
    }
}

#[derive(DeriveIden)]
enum Workers {
    Table,
    Id,
    WorkerName,
    WorkerType,
    FirstSeenUs,
    LastSeenUs,
    LastOutcome,
    RunCount,
}

#[derive(DeriveIden)]
enum Executions {
    Table,
    Id,
    ExecutionId,
    WorkerId,
    Outcome,
    StartedAtUs,
    CompletedAtUs,
    DurationMs,
    ReceivedAtUs,
    RecordsFetched,
    RecordsProcessed,
    RecordsFailed,
    Report,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Workers::Table)
                    .col(big_pk_auto(Workers::Id))
                    .col(string_len_uniq(Workers::WorkerName, 128))
                    .col(string_len(Workers::WorkerType, 64))
                    .col(big_integer(Workers::FirstSeenUs))
                    .col(big_integer(Workers::LastSeenUs))
                    .col(integer(Workers::LastOutcome))
                    .col(big_integer(Workers::RunCount))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Executions::Table)
                    .col(big_pk_auto(Executions::Id))
                    .col(string_len_uniq(Executions::ExecutionId, 36))
                    .col(big_integer(Executions::WorkerId))
                    .col(integer(Executions::Outcome))
                    .col(big_integer(Executions::StartedAtUs))
                    .col(big_integer(Executions::CompletedAtUs))
                    .col(big_integer(Executions::DurationMs))
                    .col(big_integer(Executions::ReceivedAtUs))
                    .col(big_integer(Executions::RecordsFetched))
                    .col(big_integer(Executions::RecordsProcessed))
                    .col(big_integer(Executions::RecordsFailed))
                    .col(blob(Executions::Report))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_executions_worker")
                            .from(Executions::Table, Executions::WorkerId)
                            .to(Workers::Table, Workers::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_executions_worker_started")
                    .table(Executions::Table)
                    .col(Executions::WorkerId)
                    .col(Executions::StartedAtUs)
                    .col(Executions::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_executions_started")
                    .table(Executions::Table)
                    .col(Executions::StartedAtUs)
                    .col(Executions::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Executions::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Workers::Table).to_owned()).await
    }
}
