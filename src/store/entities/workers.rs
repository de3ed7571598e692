//! A worker, registered by its first report, with its running state.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workers")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub worker_name: String,
    pub worker_type: String,
    pub first_seen_us: i64,
    pub last_seen_us: i64,
    pub last_outcome: i32,
    pub run_count: i64,
    pub duration_mean_ms: f64,
    pub duration_m2: f64,
    pub records_mean: f64,
    pub records_m2: f64,
    pub duration_ewma_ms: f64,
    pub records_ewma: f64,
    pub last_run_at_us: Option<i64>,
    pub runs_today: i64,
    /// UTC day of `runs_today`, as days since 1970-01-01.
    pub runs_today_day: Option<i32>,
    pub last_overall_score: f64,
    pub last_quality_level: i32,
    /// JSON array of the latest runs anomaly detection compares a new run with.
    pub recent_runs: Option<String>,
    /// Declared schedule: seconds between runs, or a cron expression (at most one is set).
    pub schedule_interval_secs: Option<i64>,
    pub schedule_cron: Option<String>,
    /// Declared grace; `None` means the default for the schedule.
    pub schedule_grace_secs: Option<i64>,
    pub paused: bool,
    /// When the worker was last resumed; missed slots are counted from here at the earliest.
    pub resumed_at_us: Option<i64>,
    pub owner: String,
    pub description: String,
    /// JSON object of labels.
    pub labels: Option<String>,
    /// The health last published (by the detector or ingest), to detect changes.
    pub health: String,
    /// The latest missed slot recorded as a MISSED_RUN anomaly, so each slot is recorded once.
    pub missed_through_us: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
