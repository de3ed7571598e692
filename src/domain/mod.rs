//! Pure domain logic: no I/O, no clock, no database, no network. Every function here takes what
//! it needs (including `now`) as arguments, so it is tested without a server.
//!
//! Domain code may use the generated contract types (`crate::proto`), never `store` or `api`.

pub mod access;
pub mod alerting;
pub mod analysis;
pub mod anomaly;
pub mod cron;
pub mod guardian;
pub mod insights;
pub mod learning;
pub mod page_token;
pub mod rollup;
pub mod schedule;
pub mod scoring;
pub mod sketch;
pub mod validation;
pub mod worker_settings;
