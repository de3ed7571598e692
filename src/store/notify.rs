//! Live events across replicas on PostgreSQL: a write transaction that stores executions or
//! changes a worker's health also sends `pg_notify('runwarden_events', …)` with their ids, so the
//! notice is delivered exactly when (and only if) the transaction commits. Every replica LISTENs
//! ([`spawn_listener`]), ignores its own notices, loads the executions by id and publishes them
//! and the health changes to its local watchers. The listening connection reconnects by itself
//! after a loss; notices sent while it was down are not replayed (watchers see live events, and
//! the queries have everything).
//!
//! On SQLite (one node) nothing is sent: the in-process broadcast is the whole story.

use std::{sync::Arc, time::Duration};

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::{Store, executions, ingest::Ingest};
use crate::{domain::validation::to_timestamp, proto::v1::WorkerHealthChange};

/// The notification channel.
pub const CHANNEL: &str = "runwarden_events";
/// PostgreSQL refuses payloads of 8000 bytes or more; stay well under.
const MAX_PAYLOAD: usize = 7000;

/// One notice.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Notice {
    /// The sending replica.
    pub r: String,
    /// Stored execution ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub e: Vec<String>,
    /// Health changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub h: Vec<HealthNotice>,
    /// Streams that ended (closed, orphaned or cleaned), so replicas stop trusting what they cached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub s: Vec<String>,
}

/// A worker health change in a notice.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct HealthNotice {
    pub w: String,
    pub p: i32,
    pub c: i32,
    pub at: i64,
}

/// The notices (each under the payload limit) that announce `executions` and `health`.
pub fn notices(replica: &str, executions: &[&str], health: &[WorkerHealthChange]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = Notice { r: replica.to_owned(), ..Default::default() };
    let mut size = replica.len() + 16;
    let flush = |current: &mut Notice, out: &mut Vec<String>, size: &mut usize| {
        if !current.e.is_empty() || !current.h.is_empty() {
            out.push(serde_json::to_string(&*current).unwrap_or_default());
        }
        current.e.clear();
        current.h.clear();
        current.s.clear();
        *size = replica.len() + 16;
    };
    for id in executions {
        if size + id.len() + 3 > MAX_PAYLOAD {
            flush(&mut current, &mut out, &mut size);
        }
        size += id.len() + 3;
        current.e.push((*id).to_owned());
    }
    for change in health {
        let entry = HealthNotice {
            w: change.worker_name.clone(),
            p: change.previous,
            c: change.current,
            at: change.at.map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos / 1000)),
        };
        let entry_size = entry.w.len() + 48;
        if size + entry_size > MAX_PAYLOAD {
            flush(&mut current, &mut out, &mut size);
        }
        size += entry_size;
        current.h.push(entry);
    }
    flush(&mut current, &mut out, &mut size);
    out
}

/// Sends the notices inside `txn` (delivered at commit). Does nothing on SQLite.
pub async fn send(
    txn: &impl ConnectionTrait,
    replica: &str,
    executions: &[&str],
    health: &[WorkerHealthChange],
) -> Result<(), DbErr> {
    if txn.get_database_backend() != DbBackend::Postgres || (executions.is_empty() && health.is_empty()) {
        return Ok(());
    }
    for payload in notices(replica, executions, health) {
        notify(txn, payload).await?;
    }
    Ok(())
}

/// Announces, inside `txn`, that these streams ended. Does nothing on SQLite (one node).
pub async fn send_stream_ends(txn: &impl ConnectionTrait, replica: &str, stream_ids: &[&str]) -> Result<(), DbErr> {
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    for chunk in stream_ids.chunks(60) {
        let notice = Notice {
            r: replica.to_owned(),
            s: chunk.iter().map(|id| (*id).to_owned()).collect(),
            ..Default::default()
        };
        notify(txn, serde_json::to_string(&notice).unwrap_or_default()).await?;
    }
    Ok(())
}

/// `pg_notify` on [`CHANNEL`], delivered when `txn` commits.
async fn notify(txn: &impl ConnectionTrait, payload: String) -> Result<(), DbErr> {
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [CHANNEL.into(), payload.into()],
    ))
    .await?;
    Ok(())
}

/// LISTENs for other replicas' notices and republishes them to this replica's watchers. `None` on
/// SQLite.
pub fn spawn_listener(store: Store, ingest: Ingest) -> Option<JoinHandle<()>> {
    let options = store.listen_options()?.clone();
    Some(tokio::spawn(async move {
        loop {
            let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_lazy_with(options.clone());
            let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN for other replicas' events; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            tracing::info!(channel = CHANNEL, "listening for other replicas' events");
            loop {
                // `recv` reconnects (and re-LISTENs) by itself after a lost connection.
                match listener.recv().await {
                    Ok(notification) => relay(&store, &ingest, notification.payload()).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the LISTEN connection; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }))
}

async fn relay(store: &Store, ingest: &Ingest, payload: &str) {
    let notice: Notice = match serde_json::from_str(payload) {
        Ok(notice) => notice,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable replica event");
            return;
        }
    };
    if notice.r == store.replica() {
        return;
    }
    if !notice.e.is_empty() {
        match executions::find_many(store.reader(), &notice.e).await {
            Ok(rows) => {
                for row in rows {
                    match row.to_proto() {
                        Ok(execution) => ingest.publish_execution(Arc::new(execution)),
                        Err(e) => tracing::warn!(error = %e, "cannot decode a replica's execution"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot load a replica's executions"),
        }
    }
    if !notice.s.is_empty() {
        ingest.relay_stream_ends(notice.s);
    }
    if !notice.h.is_empty() {
        ingest.relay_health(
            notice
                .h
                .into_iter()
                .map(|h| WorkerHealthChange {
                    worker_name: h.w,
                    previous: h.p,
                    current: h.c,
                    at: Some(to_timestamp(super::from_micros(h.at))),
                })
                .collect(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A notice is network input (any session can NOTIFY the channel): reading one never panics.
        #[test]
        fn any_payload_is_read_or_refused(payload in ".{0,400}") {
            let _ = serde_json::from_str::<Notice>(&payload);
        }

        #[test]
        fn notices_round_trip(ids in proptest::collection::vec("[a-f0-9-]{1,36}", 0..400)) {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let mut seen = Vec::new();
            for payload in notices("r", &refs, &[]) {
                proptest::prop_assert!(payload.len() < 8000);
                seen.extend(serde_json::from_str::<Notice>(&payload).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?.e);
            }
            proptest::prop_assert_eq!(seen, ids);
        }
    }

    #[test]
    fn notices_stay_under_the_payload_limit_and_lose_nothing() {
        let ids: Vec<String> = (0..1000).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let health: Vec<WorkerHealthChange> = (0..300)
            .map(|i| WorkerHealthChange { worker_name: format!("worker_{i}"), previous: 2, current: 3, at: None })
            .collect();
        let payloads = notices("replica-a", &refs, &health);
        assert!(payloads.len() > 1);
        let mut seen_ids = Vec::new();
        let mut seen_health = 0;
        for payload in &payloads {
            assert!(payload.len() < 8000, "{}", payload.len());
            let notice: Notice = serde_json::from_str(payload).unwrap();
            assert_eq!(notice.r, "replica-a");
            seen_ids.extend(notice.e);
            seen_health += notice.h.len();
        }
        assert_eq!(seen_ids, ids);
        assert_eq!(seen_health, 300);
        assert!(notices("replica-a", &[], &[]).is_empty());
    }
}
