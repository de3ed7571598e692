//! One state change of one alert, written in the transaction that made it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, Default, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "alert_outbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `worker/KIND` (or `guardian/KIND`).
    pub alert_key: String,
    pub worker_name: String,
    pub kind: String,
    pub severity: String,
    /// `firing` or `resolved`.
    pub state: String,
    pub summary: String,
    /// JSON object.
    pub evidence: String,
    pub starts_at_us: i64,
    pub ends_at_us: Option<i64>,
    pub created_at_us: i64,
    /// The sender has made this change's sends (reset when `occurrences` grows, for rules that
    /// wait for N in a row).
    pub fanned_out: bool,
    /// Times the condition was observed in a row while firing (1 when it starts).
    pub occurrences: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
