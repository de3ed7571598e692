//! Rollups per worker, by UTC hour and by UTC day (what statistics read instead of raw
//! executions), and the last run's score on the worker row (for the workers list).

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000003_worker_rollups"
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum WorkerRollups {
    Table,
    WorkerId,
    /// 1 = hour, 2 = day.
    Period,
    StartUs,
    Runs,
    Successful,
    Partial,
    Failed,
    TimedOut,
    Skipped,
    DurationSumMs,
    DurationSumsq,
    DurationMaxMs,
    ReliabilitySum,
    PerformanceSum,
    DataQualitySum,
    ResourceEfficiencySum,
    OverallSum,
    OverallSumsq,
    RecordsFetched,
    RecordsProcessed,
    RecordsFailed,
    ValidationPassed,
    ValidationFailed,
    RateLimitedRuns,
    MissingFields,
    NewestRecordAgeMax,
    Durations,
}

#[derive(DeriveIden, Clone, Copy)]
enum Workers {
    Table,
    Id,
    LastOverallScore,
    LastQualityLevel,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use WorkerRollups as H;
        let mut table = Table::create();
        table
            .table(H::Table)
            .col(big_integer(H::WorkerId))
            .col(small_integer(H::Period))
            .col(big_integer(H::StartUs))
            .primary_key(Index::create().col(H::WorkerId).col(H::Period).col(H::StartUs))
            .foreign_key(
                ForeignKey::create()
                    .name("fk_worker_rollups_worker")
                    .from(H::Table, H::WorkerId)
                    .to(Workers::Table, Workers::Id)
                    .on_delete(ForeignKeyAction::Cascade),
            );
        for column in [
            H::Runs,
            H::Successful,
            H::Partial,
            H::Failed,
            H::TimedOut,
            H::Skipped,
            H::DurationSumMs,
            H::DurationMaxMs,
            H::RecordsFetched,
            H::RecordsProcessed,
            H::RecordsFailed,
            H::ValidationPassed,
            H::ValidationFailed,
            H::RateLimitedRuns,
            H::MissingFields,
        ] {
            table.col(big_integer(column));
        }
        for column in [
            H::DurationSumsq,
            H::ReliabilitySum,
            H::PerformanceSum,
            H::DataQualitySum,
            H::ResourceEfficiencySum,
            H::OverallSum,
            H::OverallSumsq,
        ] {
            table.col(double(column));
        }
        table.col(double_null(H::NewestRecordAgeMax)).col(blob(H::Durations));
        manager.create_table(table.to_owned()).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_worker_rollups_period_start")
                    .table(H::Table)
                    .col(H::Period)
                    .col(H::StartUs)
                    .to_owned(),
            )
            .await?;
        for mut column in [
            ColumnDef::new(Workers::LastOverallScore).double().not_null().default(0.0).to_owned(),
            ColumnDef::new(Workers::LastQualityLevel).integer().not_null().default(0).to_owned(),
        ] {
            manager.alter_table(Table::alter().table(Workers::Table).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Workers::LastOverallScore, Workers::LastQualityLevel] {
            manager.alter_table(Table::alter().table(Workers::Table).drop_column(column).to_owned()).await?;
        }
        manager.drop_table(Table::drop().table(WorkerRollups::Table).to_owned()).await
    }
}
