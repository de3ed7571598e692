//! API tokens: who may call what. Only a SHA-256 of each token's secret is stored; the secret is
//! shown once, when the token is created.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000008_api_tokens"
    }
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    Name,
    Scope,
    WorkerPrefix,
    SecretSha256,
    CreatedAtUs,
    ExpiresAtUs,
    RevokedAtUs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiTokens::Table)
                    // The public half of the token (`rwt_<id>_<secret>`): 16 hex digits.
                    .col(string_len(ApiTokens::Id, 16).primary_key())
                    .col(string_len(ApiTokens::Name, 128).unique_key())
                    .col(string_len(ApiTokens::Scope, 16))
                    .col(string_len_null(ApiTokens::WorkerPrefix, 200))
                    .col(string_len(ApiTokens::SecretSha256, 64))
                    .col(big_integer(ApiTokens::CreatedAtUs))
                    .col(big_integer_null(ApiTokens::ExpiresAtUs))
                    .col(big_integer_null(ApiTokens::RevokedAtUs))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ApiTokens::Table).to_owned()).await
    }
}
