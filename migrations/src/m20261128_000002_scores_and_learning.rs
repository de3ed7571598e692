//! Scores, quality level and learning fields on each execution; the running state that learning
//! folds every run into on each worker. SQLite adds one column per ALTER TABLE.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000002_scores_and_learning"
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Executions {
    Table,
    ScoreReliability,
    ScorePerformance,
    ScoreDataQuality,
    ScoreResourceEfficiency,
    ScoreOverall,
    QualityLevel,
    TimeOfDayUtc,
    DayOfWeek,
    ExecutionNumberToday,
    Analysis,
}

#[derive(DeriveIden, Clone, Copy)]
enum Workers {
    Table,
    DurationMeanMs,
    DurationM2,
    RecordsMean,
    RecordsM2,
    DurationEwmaMs,
    RecordsEwma,
    LastRunAtUs,
    RunsToday,
    RunsTodayDay,
}

fn double(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name).double().not_null().default(0.0).to_owned()
}

fn int(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name).integer().not_null().default(0).to_owned()
}

fn bigint(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name).big_integer().not_null().default(0).to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let execution_columns = [
            double(Executions::ScoreReliability),
            double(Executions::ScorePerformance),
            double(Executions::ScoreDataQuality),
            double(Executions::ScoreResourceEfficiency),
            double(Executions::ScoreOverall),
            int(Executions::QualityLevel),
            int(Executions::TimeOfDayUtc),
            int(Executions::DayOfWeek),
            bigint(Executions::ExecutionNumberToday),
            ColumnDef::new(Executions::Analysis).blob().null().to_owned(),
        ];
        for mut column in execution_columns {
            manager.alter_table(Table::alter().table(Executions::Table).add_column(&mut column).to_owned()).await?;
        }
        let worker_columns = [
            double(Workers::DurationMeanMs),
            double(Workers::DurationM2),
            double(Workers::RecordsMean),
            double(Workers::RecordsM2),
            double(Workers::DurationEwmaMs),
            double(Workers::RecordsEwma),
            ColumnDef::new(Workers::LastRunAtUs).big_integer().null().to_owned(),
            bigint(Workers::RunsToday),
            ColumnDef::new(Workers::RunsTodayDay).integer().null().to_owned(),
        ];
        for mut column in worker_columns {
            manager.alter_table(Table::alter().table(Workers::Table).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Executions::ScoreReliability,
            Executions::ScorePerformance,
            Executions::ScoreDataQuality,
            Executions::ScoreResourceEfficiency,
            Executions::ScoreOverall,
            Executions::QualityLevel,
            Executions::TimeOfDayUtc,
            Executions::DayOfWeek,
            Executions::ExecutionNumberToday,
            Executions::Analysis,
        ] {
            manager.alter_table(Table::alter().table(Executions::Table).drop_column(column).to_owned()).await?;
        }
        for column in [
            Workers::DurationMeanMs,
            Workers::DurationM2,
            Workers::RecordsMean,
            Workers::RecordsM2,
            Workers::DurationEwmaMs,
            Workers::RecordsEwma,
            Workers::LastRunAtUs,
            Workers::RunsToday,
            Workers::RunsTodayDay,
        ] {
            manager.alter_table(Table::alter().table(Workers::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
