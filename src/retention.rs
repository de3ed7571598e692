//! Retention: raw executions older than `executions` (30 days by default), rollups older than
//! `rollups` (400 days) and resolved anomalies older than `resolved_anomalies` (90 days) are deleted
//! in bounded batches, each its own short write transaction, so ingest commits between them and
//! never waits long. Statistics read rollups, so they outlive the raw runs. Guardian snapshots keep
//! their own 7-day window (pruned by the tick).
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
    pub batches: u64,
    /// False when another replica held the lock.
    pub ran: bool,
}

pub struct Retention {
    store: Store,
    clock: Arc<dyn Clock>,
    config: RetentionConfig,
}

/// The batched deletes, oldest first. Only integers are interpolated.
///
/// Each selects its batch by a range seek on an index (`idx_executions_started`,
/// `idx_worker_rollups_period_start` — hence the list of periods — and `idx_anomalies_resolved`),
/// never by reading the table: the select runs inside a write transaction, and on SQLite ingest
/// waits for it (test: `every_retention_delete_seeks_an_index`).
fn statements(cutoffs: [i64; 3], batch: u64) -> [String; 3] {
    let [executions, rollups, anomalies] = cutoffs;
    let periods = Period::ALL.map(|p| p.code().to_string()).join(", ");
    [
        format!(
            "DELETE FROM executions WHERE id IN \
             (SELECT id FROM executions WHERE started_at_us < {executions} ORDER BY started_at_us LIMIT {batch})"
        ),
        format!(
            "DELETE FROM worker_rollups WHERE (worker_id, period, start_us) IN \
             (SELECT worker_id, period, start_us FROM worker_rollups \
             WHERE period IN ({periods}) AND start_us < {rollups} LIMIT {batch})"
        ),
        format!(
            "DELETE FROM anomalies WHERE id IN \
             (SELECT id FROM anomalies WHERE resolved_at_us IS NOT NULL AND resolved_at_us < {anomalies} \
             ORDER BY resolved_at_us LIMIT {batch})"
        ),
    ]
}

impl Retention {
    pub fn new(store: Store, clock: Arc<dyn Clock>, config: RetentionConfig) -> Arc<Retention> {
        Arc::new(Retention { store, clock, config })
    }

    /// Deletes everything past its retention, batch by batch.
    pub async fn run_once(&self) -> Result<RetentionPass, Error> {
        let now = self.clock.now();
        let cutoff = |keep: TimeDelta| to_micros(now - keep);
        let batch = self.config.batch.max(1);
        let sql = statements(
            [cutoff(self.config.executions), cutoff(self.config.rollups), cutoff(self.config.resolved_anomalies)],
            batch,
        );
        let mut pass = RetentionPass { ran: true, ..Default::default() };
        for (table, statement) in sql.iter().enumerate() {
            loop {
                let txn = self.store.begin_write().await?;
                if !crate::store::try_singleton_lock(&txn, RETENTION_LOCK_KEY).await? {
                    txn.commit().await?;
                    return Ok(RetentionPass { ran: false, ..pass });
                }
                let deleted = txn
                    .execute_raw(Statement::from_string(self.store.backend(), statement.clone()))
                    .await?
                    .rows_affected();
                txn.commit().await?;
                pass.batches += 1;
                match table {
                    0 => pass.executions += deleted,
                    1 => pass.rollups += deleted,
                    _ => pass.anomalies += deleted,
                }
                if deleted < batch {
                    break;
                }
                // Let the ingest writer in between batches.
                tokio::task::yield_now().await;
            }
        }
        if pass.executions + pass.rollups + pass.anomalies > 0 {
            tracing::info!(
                executions = pass.executions,
                rollups = pass.rollups,
                anomalies = pass.anomalies,
                batches = pass.batches,
                "retention pass"
            );
        }
        metrics::counter!("runwarden_retention_deleted_total", "table" => "executions").increment(pass.executions);
        metrics::counter!("runwarden_retention_deleted_total", "table" => "worker_rollups").increment(pass.rollups);
        metrics::counter!("runwarden_retention_deleted_total", "table" => "anomalies").increment(pass.anomalies);
        Ok(pass)
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
        for statement in statements([1, 2, 3], 5_000) {
            let select = statement.split_once(" IN (").map(|(_, s)| s.trim_end_matches(')')).expect("a subselect");
            assert_seeks_an_index(&store, Statement::from_string(store.backend(), select)).await;
        }
        store.close().await;
    }
}
