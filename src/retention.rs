//! Retention: raw executions older than `executions` (30 days by default), rollups older than
//! `rollups` (400 days), resolved anomalies older than `resolved_anomalies` (90 days) and alert
//! history older than `alerts` (90 days) are deleted in bounded batches, each its own short write
//! transaction, so ingest commits between them and never waits long. Statistics read rollups, so
//! they outlive the raw runs. Guardian snapshots keep their own 7-day window (pruned by the tick).
//!
//! Alert history is the outbox of alert state changes, their sends (deleted with their outbox row)
//! and the delivery attempts. An outbox row is kept, whatever its age, while alerting still needs
//! it: the latest row of each alert (its current state), a row not yet fanned out or with a send
//! still pending, and the row before one not yet fanned out (a resolution goes where the firing
//! before it went).
//!
//! Singleton work: on PostgreSQL each batch first takes an advisory transaction lock; a replica that
//! does not get it leaves the pass to the one that did, and the next pass anywhere takes over.

use std::{sync::Arc, time::Duration};

use chrono::TimeDelta;
use sea_orm::{ConnectionTrait, Statement};
use tokio::sync::watch;

use crate::{
    api::Clock,
    domain::rollup::Period,
    error::Error,
    store::{Store, to_micros},
};

/// Key of the advisory lock that makes one replica delete at a time.
const RETENTION_LOCK_KEY: i64 = 0x7277_7265_7465_6e74; // "rwretent"

#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Time between passes (1 hour).
    pub interval: Duration,
    pub executions: TimeDelta,
    pub rollups: TimeDelta,
    pub resolved_anomalies: TimeDelta,
    /// Alert state changes, their sends and the delivery attempts (90 days).
    pub alerts: TimeDelta,
    /// Rows per delete transaction (5,000).
    pub batch: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval: Duration::from_secs(3600),
            executions: TimeDelta::days(30),
            rollups: TimeDelta::days(400),
            resolved_anomalies: TimeDelta::days(90),
            alerts: TimeDelta::days(90),
            batch: 5_000,
        }
    }
}

/// What one pass deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionPass {
    pub executions: u64,
    pub rollups: u64,
    pub anomalies: u64,
    /// Alert outbox rows (each with its sends).
    pub alert_changes: u64,
    pub alert_attempts: u64,
    pub batches: u64,
    /// False when another replica held the lock.
    pub ran: bool,
}

pub struct Retention {
    store: Store,
    clock: Arc<dyn Clock>,
    config: RetentionConfig,
}

/// The tables retention deletes from, in the order of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Executions,
    Rollups,
    Anomalies,
    AlertAttempts,
    AlertOutbox,
}

impl Table {
    const ALL: [Table; 5] =
        [Table::Executions, Table::Rollups, Table::Anomalies, Table::AlertAttempts, Table::AlertOutbox];

    /// The name in `runwarden_retention_deleted_total{table}`.
    fn name(self) -> &'static str {
        match self {
            Table::Executions => "executions",
            Table::Rollups => "worker_rollups",
            Table::Anomalies => "anomalies",
            Table::AlertAttempts => "alert_attempts",
            Table::AlertOutbox => "alert_outbox",
        }
    }
}

/// Deletes older than these (microseconds since the epoch), per kind of row.
#[derive(Debug, Clone, Copy)]
struct Cutoffs {
    executions: i64,
    rollups: i64,
    anomalies: i64,
    alerts: i64,
}

/// The batched delete of `table`. Only integers are interpolated.
///
/// Each selects its batch by a range seek on an index (`idx_executions_started`,
/// `idx_worker_rollups_period_start` — hence the list of periods —, `idx_anomalies_resolved`,
/// `idx_alert_attempts_at`, `idx_alert_outbox_created`), never by reading the table: the select
/// runs inside a write transaction, and on SQLite ingest waits for it (test:
/// `every_retention_delete_seeks_an_index`).
///
/// An outbox row goes only once the next row of its alert exists and is fanned out (so it is not
/// the alert's current state, and no resolution still to be fanned out looks for it: an alert's
/// rows alternate firing, resolved, firing…, so the firing a resolution ends is the row just
/// before it), it is fanned out itself, and each of its sends is delivered or given up (asked so,
/// not as `state = 'pending'`, which SQLite answers from `idx_alert_sends_due`: every pending
/// send, for each row, while a channel is down, instead of this row's few sends), and no
/// delivery attempt of its sends is left (attempts are kept by their own time, which may be long
/// after the row's: without this, `ListAlertDeliveries` would list attempts whose alert is gone;
/// `idx_alert_attempts_send`). Its sends go with it (`ON DELETE CASCADE`).
fn statement(table: Table, cutoffs: Cutoffs, batch: u64) -> String {
    match table {
        Table::Executions => format!(
            "DELETE FROM executions WHERE id IN \
             (SELECT id FROM executions WHERE started_at_us < {} ORDER BY started_at_us LIMIT {batch})",
            cutoffs.executions
        ),
        Table::Rollups => format!(
            "DELETE FROM worker_rollups WHERE (worker_id, period, start_us) IN \
             (SELECT worker_id, period, start_us FROM worker_rollups \
             WHERE period IN ({}) AND start_us < {} LIMIT {batch})",
            Period::ALL.map(|p| p.code().to_string()).join(", "),
            cutoffs.rollups
        ),
        Table::Anomalies => format!(
            "DELETE FROM anomalies WHERE id IN \
             (SELECT id FROM anomalies WHERE resolved_at_us IS NOT NULL AND resolved_at_us < {} \
             ORDER BY resolved_at_us LIMIT {batch})",
            cutoffs.anomalies
        ),
        Table::AlertAttempts => format!(
            "DELETE FROM alert_attempts WHERE id IN \
             (SELECT id FROM alert_attempts WHERE at_us < {} ORDER BY at_us LIMIT {batch})",
            cutoffs.alerts
        ),
        Table::AlertOutbox => format!(
            "DELETE FROM alert_outbox WHERE id IN \
             (SELECT o.id FROM alert_outbox o WHERE o.created_at_us < {} AND o.fanned_out \
             AND (SELECT n.fanned_out FROM alert_outbox n WHERE n.alert_key = o.alert_key AND n.id > o.id \
             ORDER BY n.id LIMIT 1) \
             AND NOT EXISTS (SELECT 1 FROM alert_sends s WHERE s.outbox_id = o.id \
             AND s.state <> 'delivered' AND s.state <> 'failed') \
             AND NOT EXISTS (SELECT 1 FROM alert_sends s JOIN alert_attempts a ON a.send_id = s.id \
             WHERE s.outbox_id = o.id) \
             ORDER BY o.created_at_us LIMIT {batch})",
            cutoffs.alerts
        ),
    }
}

impl Retention {
    pub fn new(store: Store, clock: Arc<dyn Clock>, config: RetentionConfig) -> Arc<Retention> {
        Arc::new(Retention { store, clock, config })
    }

    /// Deletes everything past its retention, batch by batch.
    pub async fn run_once(&self) -> Result<RetentionPass, Error> {
        let now = self.clock.now();
        let cutoff = |keep: TimeDelta| to_micros(now - keep);
        let cutoffs = Cutoffs {
            executions: cutoff(self.config.executions),
            rollups: cutoff(self.config.rollups),
            anomalies: cutoff(self.config.resolved_anomalies),
            alerts: cutoff(self.config.alerts),
        };
        let batch = self.config.batch.max(1);
        let mut pass = RetentionPass { ran: true, ..Default::default() };
        for table in Table::ALL {
            let sql = statement(table, cutoffs, batch);
            loop {
                let txn = self.store.begin_write().await?;
                if !crate::store::try_singleton_lock(&txn, RETENTION_LOCK_KEY).await? {
                    txn.commit().await?;
                    return Ok(RetentionPass { ran: false, ..pass });
                }
                let deleted =
                    txn.execute_raw(Statement::from_string(self.store.backend(), sql.clone())).await?.rows_affected();
                txn.commit().await?;
                pass.batches += 1;
                *pass.count_of(table) += deleted;
                metrics::counter!("runwarden_retention_deleted_total", "table" => table.name()).increment(deleted);
                if deleted < batch {
                    break;
                }
                // Let the ingest writer in between batches.
                tokio::task::yield_now().await;
            }
        }
        if pass.executions + pass.rollups + pass.anomalies + pass.alert_changes + pass.alert_attempts > 0 {
            tracing::info!(
                executions = pass.executions,
                rollups = pass.rollups,
                anomalies = pass.anomalies,
                alert_changes = pass.alert_changes,
                alert_attempts = pass.alert_attempts,
                batches = pass.batches,
                "retention pass"
            );
        }
        Ok(pass)
    }
}

impl RetentionPass {
    fn count_of(&mut self, table: Table) -> &mut u64 {
        match table {
            Table::Executions => &mut self.executions,
            Table::Rollups => &mut self.rollups,
            Table::Anomalies => &mut self.anomalies,
            Table::AlertAttempts => &mut self.alert_attempts,
            Table::AlertOutbox => &mut self.alert_changes,
        }
    }
}

/// Runs a pass every interval until `stop` fires.
pub async fn run(retention: Arc<Retention>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(retention.config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {
                if let Err(e) = retention.run_once().await {
                    tracing::warn!(error = %e, "retention pass failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreOptions, assert_seeks_an_index};

    /// SQLite's plan for each delete's select: a SEARCH on an index, not a SCAN of the table.
    #[tokio::test]
    async fn every_retention_delete_seeks_an_index() {
        let store = Store::connect("sqlite::memory:", &StoreOptions::default()).await.expect("open");
        store.migrate().await.expect("migrate");
        let cutoffs = Cutoffs { executions: 1, rollups: 2, anomalies: 3, alerts: 4 };
        for table in Table::ALL {
            let statement = statement(table, cutoffs, 5_000);
            let select = statement.split_once(" IN (").map(|(_, s)| &s[..s.len() - 1]).expect("a subselect");
            assert_seeks_an_index(&store, Statement::from_string(store.backend(), select)).await;
        }
        store.close().await;
    }

    /// The outbox delete asks for a row's unfinished sends by `outbox_id`: a seek on
    /// `idx_alert_sends_due` (every pending send) would grow with a channel's backlog. It asks
    /// for their attempts by `send_id`, not by reading every attempt.
    #[tokio::test]
    async fn the_alert_outbox_delete_reads_a_rows_own_sends() {
        use sea_orm::ConnectionTrait;
        let store = Store::connect("sqlite::memory:", &StoreOptions::default()).await.expect("open");
        store.migrate().await.expect("migrate");
        let cutoffs = Cutoffs { executions: 1, rollups: 2, anomalies: 3, alerts: 4 };
        let statement = statement(Table::AlertOutbox, cutoffs, 5_000);
        let explain = format!("EXPLAIN QUERY PLAN {statement}");
        let rows = store.reader().query_all_raw(Statement::from_string(store.backend(), explain)).await.expect("plan");
        let plan: Vec<String> = rows.iter().filter_map(|r| r.try_get_by::<String, _>("detail").ok()).collect();
        assert!(
            plan.iter().any(|step| step.contains("SEARCH s USING INDEX idx_alert_sends_outbox (outbox_id=?)")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|step| step.contains("idx_alert_sends_due")), "{plan:?}");
        assert!(
            plan.iter().any(|step| step.starts_with("SEARCH a USING")
                && step.ends_with("INDEX idx_alert_attempts_send (send_id=?)")),
            "the attempts of a row's sends are sought by send: {plan:?}"
        );
        store.close().await;
    }
}
