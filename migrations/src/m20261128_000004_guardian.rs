//! The stream guardian's tables: tracked streams and the snapshot of every tick.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000004_guardian"
    }
}

#[derive(DeriveIden)]
enum Streams {
    Table,
    StreamId,
    StreamType,
    Owner,
    Labels,
    OpenedAtUs,
    LastHeartbeatUs,
    ClosedAtUs,
    CloseReason,
    OwnerGone,
    OrphanedAtUs,
    State,
}

#[derive(DeriveIden)]
enum GuardianSnapshots {
    Table,
    Id,
    AtUs,
    Status,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Streams::Table)
                    .col(string_len(Streams::StreamId, 128).primary_key())
                    .col(string_len(Streams::StreamType, 64))
                    .col(string_len(Streams::Owner, 256))
                    .col(text(Streams::Labels))
                    .col(big_integer(Streams::OpenedAtUs))
                    .col(big_integer(Streams::LastHeartbeatUs))
                    .col(big_integer_null(Streams::ClosedAtUs))
                    .col(text_null(Streams::CloseReason))
                    .col(boolean(Streams::OwnerGone))
                    .col(big_integer_null(Streams::OrphanedAtUs))
                    .col(small_integer(Streams::State))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_streams_state_type")
                    .table(Streams::Table)
                    .col(Streams::State)
                    .col(Streams::StreamType)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(GuardianSnapshots::Table)
                    .col(big_pk_auto(GuardianSnapshots::Id))
                    .col(big_integer(GuardianSnapshots::AtUs))
                    .col(blob(GuardianSnapshots::Status))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_guardian_snapshots_at")
                    .table(GuardianSnapshots::Table)
                    .col(GuardianSnapshots::AtUs)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(GuardianSnapshots::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Streams::Table).to_owned()).await
    }
}
