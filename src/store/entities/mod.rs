//! sea-orm entities, one per table. Columns mirror the migrations; times are microseconds since
//! the Unix epoch (UTC).

pub mod alert_attempts;
pub mod alert_outbox;
pub mod alert_rules;
pub mod alert_sends;
pub mod anomalies;
pub mod api_tokens;
pub mod executions;
pub mod guardian_snapshots;
pub mod streams;
pub mod worker_rollups;
pub mod workers;
