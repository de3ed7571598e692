//! A tracked streaming connection.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "streams")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub stream_id: String,
    pub stream_type: String,
    pub owner: String,
    /// JSON object of string labels.
    pub labels: String,
    pub opened_at_us: i64,
    pub last_heartbeat_us: i64,
    pub closed_at_us: Option<i64>,
    pub close_reason: Option<String>,
    pub owner_gone: bool,
    pub orphaned_at_us: Option<i64>,
    /// The state the last tick saw (`StreamState` code).
    pub state: i16,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
