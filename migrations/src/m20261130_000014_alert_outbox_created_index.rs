//! An index on `alert_outbox.created_at_us`, for retention. Its delete asks for alert state
//! changes older than the window; without an index leading with that column it would read the
//! whole outbox (a row per alert state change, without end) inside a write transaction, where on
//! SQLite ingest waits for it.

use crate::add_index::AddIndex;

pub const MIGRATION: AddIndex = AddIndex {
    migration: "m20261130_000014_alert_outbox_created_index",
    index: "idx_alert_outbox_created",
    table: "alert_outbox",
    columns: &["created_at_us"],
};
