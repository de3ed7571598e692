//! The schema of runwarden, as ordered sea-orm migrations. The server applies them at start
//! (under a lock, so replicas starting together do not race); `runwarden migrate` applies them
//! on demand. A migration, once released, is never edited: add a new one.

pub use sea_orm_migration::prelude::*;

mod m20261128_000001_initial;
mod m20261128_000002_scores_and_learning;
mod m20261128_000003_worker_rollups;
mod m20261128_000004_guardian;
mod m20261128_000005_anomalies;
mod m20261128_000006_worker_schedules;
mod m20261128_000007_stream_tick_indexes;
mod m20261128_000008_api_tokens;
mod m20261128_000009_alerts;
mod m20261128_000010_alert_rules;
mod m20261128_000011_anomaly_resolve_index;
mod m20261130_000012_anomaly_retention_index;
mod m20261130_000013_alert_sends_outbox_index;
mod m20261130_000014_alert_outbox_created_index;
mod m20261130_000015_alert_attempts_send_index;

mod add_index;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_initial::Migration),
            Box::new(m20261128_000002_scores_and_learning::Migration),
            Box::new(m20261128_000003_worker_rollups::Migration),
            Box::new(m20261128_000004_guardian::Migration),
            Box::new(m20261128_000005_anomalies::Migration),
            Box::new(m20261128_000006_worker_schedules::Migration),
            Box::new(m20261128_000007_stream_tick_indexes::Migration),
            Box::new(m20261128_000008_api_tokens::Migration),
            Box::new(m20261128_000009_alerts::Migration),
            Box::new(m20261128_000010_alert_rules::Migration),
            Box::new(m20261128_000011_anomaly_resolve_index::Migration),
            Box::new(m20261130_000012_anomaly_retention_index::Migration),
            Box::new(m20261130_000013_alert_sends_outbox_index::Migration),
            Box::new(m20261130_000014_alert_outbox_created_index::MIGRATION),
            Box::new(m20261130_000015_alert_attempts_send_index::MIGRATION),
        ]
    }
}
