//! sea-orm entities, one per table. Columns mirror the migrations; times are microseconds since
//! the Unix epoch (UTC).

pub mod executions;
pub mod worker_rollups;
pub mod workers;
