//! An index on `alert_attempts.send_id`, for retention. An alert state change is kept while any
//! delivery attempt of its sends is kept, so that every attempt `ListAlertDeliveries` lists still
//! names its alert; retention asks that for each candidate row, inside a write transaction, and
//! without this index each question would read every attempt.

use crate::add_index::AddIndex;

pub const MIGRATION: AddIndex = AddIndex {
    migration: "m20261130_000015_alert_attempts_send_index",
    index: "idx_alert_attempts_send",
    table: "alert_attempts",
    columns: &["send_id"],
};
