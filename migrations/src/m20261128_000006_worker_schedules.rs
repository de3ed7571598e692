//! What is expected of each worker (a declared schedule, grace, pause state, owner, labels) and
//! what the missed-run detector last concluded (health, the latest missed slot it recorded).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000006_worker_schedules"
    }
}

#[derive(DeriveIden)]
enum Workers {
    Table,
    ScheduleIntervalSecs,
    ScheduleCron,
    ScheduleGraceSecs,
    Paused,
    ResumedAtUs,
    Owner,
    Description,
    Labels,
    Health,
    MissedThroughUs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        let columns = [
            ColumnDef::new(Workers::ScheduleIntervalSecs).big_integer().null().to_owned(),
            ColumnDef::new(Workers::ScheduleCron).string().null().to_owned(),
            ColumnDef::new(Workers::ScheduleGraceSecs).big_integer().null().to_owned(),
            ColumnDef::new(Workers::Paused).boolean().not_null().default(false).to_owned(),
            ColumnDef::new(Workers::ResumedAtUs).big_integer().null().to_owned(),
            ColumnDef::new(Workers::Owner).string().not_null().default("").to_owned(),
            ColumnDef::new(Workers::Description).string().not_null().default("").to_owned(),
            ColumnDef::new(Workers::Labels).text().null().to_owned(),
            ColumnDef::new(Workers::Health).string().not_null().default("NEW").to_owned(),
            ColumnDef::new(Workers::MissedThroughUs).big_integer().null().to_owned(),
        ];
        for mut column in columns {
            manager.alter_table(Table::alter().table(Workers::Table).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Workers::ScheduleIntervalSecs,
            Workers::ScheduleCron,
            Workers::ScheduleGraceSecs,
            Workers::Paused,
            Workers::ResumedAtUs,
            Workers::Owner,
            Workers::Description,
            Workers::Labels,
            Workers::Health,
            Workers::MissedThroughUs,
        ] {
            manager.alter_table(Table::alter().table(Workers::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
