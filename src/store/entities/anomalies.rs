//! An anomaly found in a run, with its evidence.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "anomalies")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub worker_id: i64,
    /// `AnomalyKind::as_str`, e.g. `DURATION_SPIKE`.
    pub kind: String,
    /// `Severity::as_str`.
    pub severity: String,
    /// The evidence as a JSON object.
    pub evidence: String,
    pub opened_at_us: i64,
    pub resolved_at_us: Option<i64>,
    pub execution_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
