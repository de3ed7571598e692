//! One stored run: the columns queries filter and aggregate on, plus the whole normalized report
//! as protobuf bytes, so nothing a worker sent is lost.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "executions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub execution_id: String,
    pub worker_id: i64,
    pub outcome: i32,
    pub started_at_us: i64,
    pub completed_at_us: i64,
    pub duration_ms: i64,
    pub received_at_us: i64,
    pub records_fetched: i64,
    pub records_processed: i64,
    pub records_failed: i64,
    pub report: Vec<u8>,
    pub score_reliability: f64,
    pub score_performance: f64,
    pub score_data_quality: f64,
    pub score_resource_efficiency: f64,
    pub score_overall: f64,
    pub quality_level: i32,
    pub time_of_day_utc: i32,
    pub day_of_week: i32,
    pub execution_number_today: i64,
    /// The encoded `runwarden.v1.Analysis`: scores, reasons, weights, learning fields.
    pub analysis: Option<Vec<u8>>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
