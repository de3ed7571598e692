//! An alert rule added through the AdminService.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "alert_rules")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub channel: String,
    pub min_severity: Option<String>,
    /// JSON array of kinds.
    pub kinds: String,
    pub worker_prefix: Option<String>,
    pub quiet_hours: Option<String>,
    pub after_consecutive: Option<i32>,
    pub created_at_us: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
