//! Alert delivery: the outbox of alert state changes (written in the transaction that changed the
//! state), one send per change and channel, and every delivery attempt.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000009_alerts"
    }
}

#[derive(DeriveIden)]
enum AlertOutbox {
    Table,
    Id,
    AlertKey,
    WorkerName,
    Kind,
    Severity,
    State,
    Summary,
    Evidence,
    StartsAtUs,
    EndsAtUs,
    CreatedAtUs,
    FannedOut,
}

#[derive(DeriveIden)]
enum AlertSends {
    Table,
    Id,
    OutboxId,
    Channel,
    DeliveryId,
    State,
    Attempts,
    NextAttemptAtUs,
    LastError,
    DeliveredAtUs,
}

#[derive(DeriveIden)]
enum AlertAttempts {
    Table,
    Id,
    SendId,
    Channel,
    DeliveryId,
    Attempt,
    AtUs,
    Ok,
    HttpStatus,
    LatencyMs,
    Error,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AlertOutbox::Table)
                    .col(big_pk_auto(AlertOutbox::Id))
                    // `worker/KIND` or `guardian/KIND`: one alert, whose state changes are rows here.
                    .col(string_len(AlertOutbox::AlertKey, 300))
                    .col(string_len(AlertOutbox::WorkerName, 200))
                    .col(string_len(AlertOutbox::Kind, 64))
                    .col(string_len(AlertOutbox::Severity, 16))
                    // `firing` or `resolved`.
                    .col(string_len(AlertOutbox::State, 16))
                    .col(text(AlertOutbox::Summary))
                    .col(text(AlertOutbox::Evidence))
                    .col(big_integer(AlertOutbox::StartsAtUs))
                    .col(big_integer_null(AlertOutbox::EndsAtUs))
                    .col(big_integer(AlertOutbox::CreatedAtUs))
                    .col(boolean(AlertOutbox::FannedOut).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_alert_outbox_key")
                    .table(AlertOutbox::Table)
                    .col(AlertOutbox::AlertKey)
                    .col(AlertOutbox::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_alert_outbox_fanned_out")
                    .table(AlertOutbox::Table)
                    .col(AlertOutbox::FannedOut)
                    .col(AlertOutbox::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AlertSends::Table)
                    .col(big_pk_auto(AlertSends::Id))
                    .col(big_integer(AlertSends::OutboxId))
                    .col(string_len(AlertSends::Channel, 100))
                    // Sent with every attempt, so receivers drop repeats.
                    .col(string_len(AlertSends::DeliveryId, 36))
                    // `pending`, `delivered` or `failed` (gave up).
                    .col(string_len(AlertSends::State, 16))
                    .col(integer(AlertSends::Attempts).default(0))
                    .col(big_integer(AlertSends::NextAttemptAtUs))
                    .col(text_null(AlertSends::LastError))
                    .col(big_integer_null(AlertSends::DeliveredAtUs))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_alert_sends_outbox")
                            .from(AlertSends::Table, AlertSends::OutboxId)
                            .to(AlertOutbox::Table, AlertOutbox::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_alert_sends_due")
                    .table(AlertSends::Table)
                    .col(AlertSends::State)
                    .col(AlertSends::NextAttemptAtUs)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AlertAttempts::Table)
                    .col(big_pk_auto(AlertAttempts::Id))
                    .col(big_integer(AlertAttempts::SendId))
                    .col(string_len(AlertAttempts::Channel, 100))
                    .col(string_len(AlertAttempts::DeliveryId, 36))
                    .col(integer(AlertAttempts::Attempt))
                    .col(big_integer(AlertAttempts::AtUs))
                    .col(boolean(AlertAttempts::Ok))
                    .col(integer_null(AlertAttempts::HttpStatus))
                    .col(big_integer(AlertAttempts::LatencyMs))
                    .col(text_null(AlertAttempts::Error))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_alert_attempts_at")
                    .table(AlertAttempts::Table)
                    .col(AlertAttempts::AtUs)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["alert_attempts", "alert_sends", "alert_outbox"] {
            manager.drop_table(Table::drop().table(Alias::new(table)).to_owned()).await?;
        }
        Ok(())
    }
}
