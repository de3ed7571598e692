//! Indexes that let a guardian tick count the fresh healthy streams from the index alone and load
//! only the streams whose state may change (stale, orphaned, closed, or healthy but aging).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000007_stream_tick_indexes"
    }
}

#[derive(DeriveIden)]
enum Streams {
    Table,
    State,
    LastHeartbeatUs,
    ClosedAtUs,
    OrphanedAtUs,
}

const INDEXES: [(&str, Streams, Option<Streams>); 3] = [
    ("idx_streams_state_heartbeat", Streams::State, Some(Streams::LastHeartbeatUs)),
    ("idx_streams_closed_at", Streams::ClosedAtUs, None),
    ("idx_streams_orphaned_at", Streams::OrphanedAtUs, None),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, first, second) in INDEXES {
            let mut index = Index::create().name(name).table(Streams::Table).col(first).to_owned();
            if let Some(second) = second {
                index.col(second);
            }
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, _, _) in INDEXES {
            manager.drop_index(Index::drop().name(name).table(Streams::Table).to_owned()).await?;
        }
        Ok(())
    }
}
