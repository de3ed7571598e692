//! An index on `alert_sends (outbox_id, channel)`. Fanning out an outbox row looks up the sends it
//! already has, and a resolution looks up where its firing was sent; both ask by `outbox_id`,
//! which no index led with, so each lookup read the whole sends table — once per outbox row, on
//! the write connection. The foreign key's cascade from `alert_outbox` searches the same column.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261130_000013_alert_sends_outbox_index"
    }
}

#[derive(DeriveIden)]
enum AlertSends {
    Table,
    OutboxId,
    Channel,
}

const NAME: &str = "idx_alert_sends_outbox";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(NAME)
                    .table(AlertSends::Table)
                    .col(AlertSends::OutboxId)
                    .col(AlertSends::Channel)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(NAME).table(AlertSends::Table).to_owned()).await
    }
}
