//! Alert rules managed through the AdminService (beside those of the config file), and how many
//! times in a row a firing alert has been observed (for rules that wait for N in a row).

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000010_alert_rules"
    }
}

#[derive(DeriveIden)]
enum AlertRules {
    Table,
    Id,
    Channel,
    MinSeverity,
    Kinds,
    WorkerPrefix,
    QuietHours,
    AfterConsecutive,
    CreatedAtUs,
}

#[derive(DeriveIden)]
enum AlertOutbox {
    Table,
    Occurrences,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AlertRules::Table)
                    .col(big_pk_auto(AlertRules::Id))
                    .col(string_len(AlertRules::Channel, 100))
                    .col(string_len_null(AlertRules::MinSeverity, 16))
                    // JSON array of kinds; empty: all.
                    .col(text(AlertRules::Kinds))
                    .col(string_len_null(AlertRules::WorkerPrefix, 200))
                    .col(string_len_null(AlertRules::QuietHours, 16))
                    .col(integer_null(AlertRules::AfterConsecutive))
                    .col(big_integer(AlertRules::CreatedAtUs))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AlertOutbox::Table)
                    .add_column(integer(AlertOutbox::Occurrences).default(1))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(AlertOutbox::Table).drop_column(AlertOutbox::Occurrences).to_owned())
            .await?;
        manager.drop_table(Table::drop().table(AlertRules::Table).to_owned()).await
    }
}
