//! An API token: its public id, what it may do, and a SHA-256 of its secret.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "api_tokens")]
pub struct Model {
    /// The public half of the token, 16 hex digits.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    /// `Scope::as_str`: `report:write`, `read` or `admin`.
    pub scope: String,
    /// For `report:write`: the only worker names it may report for start with this.
    pub worker_prefix: Option<String>,
    /// Lower-case hex SHA-256 of the secret half.
    pub secret_sha256: String,
    pub created_at_us: i64,
    pub expires_at_us: Option<i64>,
    pub revoked_at_us: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
