//! One delivery attempt: when, how it went, how long it took.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "alert_attempts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub send_id: i64,
    pub channel: String,
    pub delivery_id: String,
    pub attempt: i32,
    pub at_us: i64,
    pub ok: bool,
    pub http_status: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
