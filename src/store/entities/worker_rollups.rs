//! One worker's runs in one UTC hour or day: counts, sums and a duration sketch.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "worker_rollups")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub worker_id: i64,
    /// 1 = hour, 2 = day.
    #[sea_orm(primary_key, auto_increment = false)]
    pub period: i16,
    #[sea_orm(primary_key, auto_increment = false)]
    pub start_us: i64,
    pub runs: i64,
    pub successful: i64,
    pub partial: i64,
    pub failed: i64,
    pub timed_out: i64,
    pub skipped: i64,
    pub duration_sum_ms: i64,
    pub duration_sumsq: f64,
    pub duration_max_ms: i64,
    pub reliability_sum: f64,
    pub performance_sum: f64,
    pub data_quality_sum: f64,
    pub resource_efficiency_sum: f64,
    pub overall_sum: f64,
    pub overall_sumsq: f64,
    pub records_fetched: i64,
    pub records_processed: i64,
    pub records_failed: i64,
    pub validation_passed: i64,
    pub validation_failed: i64,
    pub rate_limited_runs: i64,
    pub missing_fields: i64,
    pub newest_record_age_max: Option<f64>,
    pub durations: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
