//! API tokens: create, list, revoke, and load them all for the in-memory cache that checks each
//! request. Tokens are few (one per worker fleet, dashboard or operator), so the cache holds all.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, ExprTrait, QueryFilter, QueryOrder, SqlErr,
};

use super::{entities::api_tokens, to_micros};

pub use api_tokens::Model as TokenRow;

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("a token named {0:?} already exists")]
    NameTaken(String),
    #[error(transparent)]
    Db(#[from] DbErr),
}

pub async fn insert(db: &impl ConnectionTrait, row: TokenRow) -> Result<TokenRow, CreateError> {
    let name = row.name.clone();
    let active = api_tokens::ActiveModel {
        id: Set(row.id.clone()),
        name: Set(row.name.clone()),
        scope: Set(row.scope.clone()),
        worker_prefix: Set(row.worker_prefix.clone()),
        secret_sha256: Set(row.secret_sha256.clone()),
        created_at_us: Set(row.created_at_us),
        expires_at_us: Set(row.expires_at_us),
        revoked_at_us: Set(row.revoked_at_us),
    };
    match api_tokens::Entity::insert(active).exec_without_returning(db).await {
        Ok(_) => Ok(row),
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            Err(CreateError::NameTaken(name))
        }
        Err(e) => Err(e.into()),
    }
}

/// Every token, oldest first (revoked and expired ones included: they are kept for the record).
pub async fn all(db: &impl ConnectionTrait) -> Result<Vec<TokenRow>, DbErr> {
    api_tokens::Entity::find().order_by_asc(api_tokens::Column::CreatedAtUs).all(db).await
}

/// Revokes the token with this id or name; `None` when there is none. Revoking twice keeps the
/// first time.
pub async fn revoke(
    db: &impl ConnectionTrait,
    id_or_name: &str,
    now: DateTime<Utc>,
) -> Result<Option<TokenRow>, DbErr> {
    let found = api_tokens::Entity::find()
        .filter(api_tokens::Column::Id.eq(id_or_name).or(api_tokens::Column::Name.eq(id_or_name)))
        .one(db)
        .await?;
    let Some(mut row) = found else { return Ok(None) };
    if row.revoked_at_us.is_none() {
        let at = to_micros(now);
        api_tokens::Entity::update_many()
            .col_expr(api_tokens::Column::RevokedAtUs, sea_orm::sea_query::Expr::value(at))
            .filter(api_tokens::Column::Id.eq(row.id.clone()))
            .exec(db)
            .await?;
        row.revoked_at_us = Some(at);
    }
    Ok(Some(row))
}
