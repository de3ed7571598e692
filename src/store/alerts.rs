//! The alert outbox: state changes recorded in the transaction that made them (only real changes:
//! a firing alert that fires again is not a new row), the sends the sender makes of them per
//! channel, claims with a lease (so a crashed sender's work is retried, and two never send the
//! same thing at once), and the record of every attempt.

use std::collections::HashMap;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, ExprTrait,
    QueryFilter, QueryOrder, QuerySelect, Select, Statement, Value, sea_query::Expr,
};

use super::anomalies::{NewAnomaly, evidence_value};
use super::{
    entities::{alert_attempts, alert_outbox, alert_sends},
    from_micros, to_micros,
};
use crate::{
    domain::alerting::{AlertEvent, AlertState},
    proto::v1::{WorkerHealth, WorkerHealthChange},
};

pub use alert_attempts::Model as AttemptRow;
pub use alert_outbox::Model as OutboxRow;
pub use alert_sends::Model as SendRow;

/// The latest row of each of `keys`: one index seek per key (`MAX(id)` on `(alert_key, id)`), so
/// the cost does not grow with a key's history, which gains a row every time the alert changes.
/// (Reading every row of each key and keeping the last made each ingest batch slower as the
/// outbox grew: 582 rows for one key after 2 M synthetic runs.)
async fn latest(db: &impl ConnectionTrait, keys: &[&str]) -> Result<HashMap<String, OutboxRow>, DbErr> {
    let backend = db.get_database_backend();
    let mut found = HashMap::new();
    for chunk in keys.chunks(200) {
        let values: Vec<String> = (1..=chunk.len())
            .map(|n| if backend == DbBackend::Postgres { format!("(${n})") } else { "(?)".to_owned() })
            .collect();
        let sql = format!(
            "SELECT alert_outbox.* FROM alert_outbox WHERE id IN (SELECT (SELECT MAX(o.id) FROM alert_outbox o \
             WHERE o.alert_key = k.column1) FROM (VALUES {}) AS k)",
            values.join(", ")
        );
        let statement = Statement::from_sql_and_values(backend, sql, chunk.iter().map(|key| Value::from(*key)));
        for row in alert_outbox::Entity::find().from_raw_sql(statement).all(db).await? {
            found.insert(row.alert_key.clone(), row);
        }
    }
    Ok(found)
}

/// Records the events that change their alert's state, in the caller's transaction. A resolution
/// takes the severity and start of the firing it ends; one with nothing firing is dropped.
pub async fn record(db: &impl ConnectionTrait, events: &[AlertEvent], now_us: i64) -> Result<usize, DbErr> {
    if events.is_empty() {
        return Ok(0);
    }
    let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
    let mut current = latest(db, &keys).await?;
    let mut rows = Vec::new();
    let mut again: HashMap<i64, i32> = HashMap::new();
    for event in events {
        let last = current.get(&event.key);
        let firing = last.is_some_and(|r| r.state == AlertState::Firing.as_str());
        let (severity, starts_at_us) = match (event.state, last) {
            // Observed again while firing: one more in a row (rules may wait for N).
            (AlertState::Firing, Some(last)) if firing => {
                if last.id > 0 {
                    *again.entry(last.id).or_insert(0) += 1;
                }
                continue;
            }
            (AlertState::Resolved, _) if !firing => continue,
            (AlertState::Resolved, Some(last)) => (last.severity.clone(), last.starts_at_us),
            _ => (event.severity.clone(), to_micros(event.starts_at)),
        };
        let row = OutboxRow {
            id: 0,
            alert_key: event.key.clone(),
            worker_name: event.worker_name.clone(),
            kind: event.kind.clone(),
            severity,
            state: event.state.as_str().to_owned(),
            summary: event.summary.clone(),
            evidence: event.evidence.to_string(),
            starts_at_us,
            ends_at_us: event.ends_at.map(to_micros),
            created_at_us: now_us,
            fanned_out: false,
            occurrences: 1,
        };
        current.insert(event.key.clone(), row.clone());
        rows.push(row);
    }
    for (id, more) in again {
        alert_outbox::Entity::update_many()
            .col_expr(alert_outbox::Column::Occurrences, Expr::col(alert_outbox::Column::Occurrences).add(more))
            .col_expr(alert_outbox::Column::FannedOut, Expr::value(false))
            .filter(alert_outbox::Column::Id.eq(id))
            .exec(db)
            .await?;
    }
    let written = rows.len();
    for chunk in rows.chunks(100) {
        let models: Vec<_> = chunk
            .iter()
            .map(|r| alert_outbox::ActiveModel {
                alert_key: Set(r.alert_key.clone()),
                worker_name: Set(r.worker_name.clone()),
                kind: Set(r.kind.clone()),
                severity: Set(r.severity.clone()),
                state: Set(r.state.clone()),
                summary: Set(r.summary.clone()),
                evidence: Set(r.evidence.clone()),
                starts_at_us: Set(r.starts_at_us),
                ends_at_us: Set(r.ends_at_us),
                created_at_us: Set(r.created_at_us),
                fanned_out: Set(false),
                occurrences: Set(1),
                ..Default::default()
            })
            .collect();
        alert_outbox::Entity::insert_many(models).exec_without_returning(db).await?;
    }
    Ok(written)
}

/// The event a stored row describes.
pub fn event_of(row: &OutboxRow) -> AlertEvent {
    AlertEvent {
        key: row.alert_key.clone(),
        worker_name: row.worker_name.clone(),
        kind: row.kind.clone(),
        severity: row.severity.clone(),
        state: if row.state == AlertState::Firing.as_str() { AlertState::Firing } else { AlertState::Resolved },
        summary: row.summary.clone(),
        evidence: serde_json::from_str(&row.evidence).unwrap_or_default(),
        starts_at: from_micros(row.starts_at_us),
        ends_at: row.ends_at_us.map(from_micros),
    }
}

/// Outbox rows not yet turned into sends, oldest first.
pub async fn unfanned(db: &impl ConnectionTrait, limit: u64) -> Result<Vec<OutboxRow>, DbErr> {
    unfanned_query(limit).all(db).await
}

fn unfanned_query(limit: u64) -> Select<alert_outbox::Entity> {
    alert_outbox::Entity::find()
        .filter(alert_outbox::Column::FannedOut.eq(false))
        .order_by_asc(alert_outbox::Column::Id)
        .limit(limit)
}

/// The firing that `resolved` ends (the key's latest firing row before it), with the channels it
/// has sends to: a resolution goes where its firing went, whatever the rules say now. `None` when
/// the key has no firing row before it.
pub async fn firing_of(db: &impl ConnectionTrait, resolved: &OutboxRow) -> Result<Option<(i64, Vec<String>)>, DbErr> {
    let Some(firing) = firing_query(resolved).one(db).await? else { return Ok(None) };
    let sends = sends_query(vec![firing.id]).all(db).await?;
    Ok(Some((firing.id, sends.into_iter().map(|s| s.channel).collect())))
}

fn firing_query(resolved: &OutboxRow) -> Select<alert_outbox::Entity> {
    alert_outbox::Entity::find()
        .filter(alert_outbox::Column::AlertKey.eq(resolved.alert_key.clone()))
        .filter(alert_outbox::Column::State.eq(AlertState::Firing.as_str()))
        .filter(alert_outbox::Column::Id.lt(resolved.id))
        .order_by_desc(alert_outbox::Column::Id)
}

fn sends_query(outbox_ids: Vec<i64>) -> Select<alert_sends::Entity> {
    alert_sends::Entity::find().filter(alert_sends::Column::OutboxId.is_in(outbox_ids))
}

/// Creates the sends of each row to those of its channels it has none for yet (a row fanned out
/// before comes back when it fires again and a rule waits for N in a row), and marks the rows
/// fanned out: three statements for the whole slice.
pub async fn fan_out(db: &impl ConnectionTrait, rows: &[(&OutboxRow, Vec<String>)], now_us: i64) -> Result<(), DbErr> {
    let with_channels: Vec<i64> = rows.iter().filter(|(_, c)| !c.is_empty()).map(|(r, _)| r.id).collect();
    let existing: std::collections::HashSet<(i64, String)> = if with_channels.is_empty() {
        Default::default()
    } else {
        sends_query(with_channels).all(db).await?.into_iter().map(|s| (s.outbox_id, s.channel)).collect()
    };
    let sends: Vec<_> = rows
        .iter()
        .flat_map(|(row, channels)| channels.iter().map(move |channel| (row.id, channel)))
        .filter(|(id, channel)| !existing.contains(&(*id, (*channel).clone())))
        .map(|(id, channel)| alert_sends::ActiveModel {
            outbox_id: Set(id),
            channel: Set(channel.clone()),
            delivery_id: Set(uuid::Uuid::new_v4().to_string()),
            state: Set("pending".into()),
            attempts: Set(0),
            next_attempt_at_us: Set(now_us),
            ..Default::default()
        })
        .collect();
    for chunk in sends.chunks(100) {
        alert_sends::Entity::insert_many(chunk.to_vec()).exec_without_returning(db).await?;
    }
    if !rows.is_empty() {
        alert_outbox::Entity::update_many()
            .col_expr(alert_outbox::Column::FannedOut, Expr::value(true))
            .filter(alert_outbox::Column::Id.is_in(rows.iter().map(|(r, _)| r.id)))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// The outbox rows with these ids, by id.
async fn outbox_by_id(db: &impl ConnectionTrait, ids: Vec<i64>) -> Result<HashMap<i64, OutboxRow>, DbErr> {
    let rows = alert_outbox::Entity::find().filter(alert_outbox::Column::Id.is_in(ids)).all(db).await?;
    Ok(rows.into_iter().map(|r| (r.id, r)).collect())
}

/// Claims up to `limit` due sends for `lease_us` (they are not due again until then, so a
/// crashed sender's claims come back) and returns them with their outbox rows, oldest first.
pub async fn claim_due(
    db: &impl ConnectionTrait,
    now_us: i64,
    lease_us: i64,
    limit: u64,
) -> Result<Vec<(SendRow, OutboxRow)>, DbErr> {
    let sends = alert_sends::Entity::find()
        .filter(alert_sends::Column::State.eq("pending"))
        .filter(alert_sends::Column::NextAttemptAtUs.lte(now_us))
        .order_by_asc(alert_sends::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    if sends.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = sends.iter().map(|s| s.id).collect();
    alert_sends::Entity::update_many()
        .col_expr(alert_sends::Column::NextAttemptAtUs, Expr::value(now_us + lease_us))
        .filter(alert_sends::Column::Id.is_in(ids))
        .exec(db)
        .await?;
    let outbox_ids: Vec<i64> = sends.iter().map(|s| s.outbox_id).collect();
    let rows = outbox_by_id(db, outbox_ids).await?;
    Ok(sends.into_iter().filter_map(|s| rows.get(&s.outbox_id).cloned().map(|r| (s, r))).collect())
}

/// How an attempt went.
pub struct Attempt {
    pub ok: bool,
    pub http_status: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// What becomes of the send after an attempt.
pub enum Next {
    Delivered,
    RetryAt(i64),
    GiveUp,
}

pub async fn finish(
    db: &impl ConnectionTrait,
    send: &SendRow,
    attempt: &Attempt,
    next: Next,
    now_us: i64,
) -> Result<(), DbErr> {
    let number = send.attempts + 1;
    alert_attempts::Entity::insert(alert_attempts::ActiveModel {
        send_id: Set(send.id),
        channel: Set(send.channel.clone()),
        delivery_id: Set(send.delivery_id.clone()),
        attempt: Set(number),
        at_us: Set(now_us),
        ok: Set(attempt.ok),
        http_status: Set(attempt.http_status),
        latency_ms: Set(attempt.latency_ms),
        error: Set(attempt.error.clone()),
        ..Default::default()
    })
    .exec_without_returning(db)
    .await?;
    let mut update = alert_sends::Entity::update_many()
        .col_expr(alert_sends::Column::Attempts, Expr::value(number))
        .col_expr(alert_sends::Column::LastError, Expr::value(attempt.error.clone()))
        .filter(alert_sends::Column::Id.eq(send.id));
    update = match next {
        Next::Delivered => update
            .col_expr(alert_sends::Column::State, Expr::value("delivered"))
            .col_expr(alert_sends::Column::DeliveredAtUs, Expr::value(now_us)),
        Next::RetryAt(at) => update.col_expr(alert_sends::Column::NextAttemptAtUs, Expr::value(at)),
        Next::GiveUp => update.col_expr(alert_sends::Column::State, Expr::value("failed")),
    };
    update.exec(db).await?;
    Ok(())
}

/// Whether the latest state of `key` is firing.
pub async fn is_firing(db: &impl ConnectionTrait, key: &str) -> Result<bool, DbErr> {
    Ok(latest(db, &[key]).await?.get(key).is_some_and(|r| r.state == AlertState::Firing.as_str()))
}

/// Every alert whose latest state is firing (for Alertmanager's re-sends).
pub async fn firing(db: &impl ConnectionTrait) -> Result<Vec<OutboxRow>, DbErr> {
    use sea_orm::sea_query::Query;
    let latest = Query::select()
        .expr(sea_orm::sea_query::Func::max(Expr::col(alert_outbox::Column::Id)))
        .from(alert_outbox::Entity)
        .group_by_col(alert_outbox::Column::AlertKey)
        .to_owned();
    alert_outbox::Entity::find()
        .filter(alert_outbox::Column::Id.in_subquery(latest))
        .filter(alert_outbox::Column::State.eq(AlertState::Firing.as_str()))
        .order_by_asc(alert_outbox::Column::Id)
        .all(db)
        .await
}

/// The latest attempts, newest first, optionally of one channel.
pub async fn attempts(
    db: &impl ConnectionTrait,
    channel: Option<&str>,
    limit: u64,
) -> Result<Vec<(AttemptRow, Option<OutboxRow>)>, DbErr> {
    let mut query = alert_attempts::Entity::find().order_by_desc(alert_attempts::Column::Id).limit(limit);
    if let Some(channel) = channel {
        query = query.filter(alert_attempts::Column::Channel.eq(channel));
    }
    let attempts = query.all(db).await?;
    let send_ids: Vec<i64> = attempts.iter().map(|a| a.send_id).collect();
    let sends: HashMap<i64, i64> = alert_sends::Entity::find()
        .filter(alert_sends::Column::Id.is_in(send_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|s| (s.id, s.outbox_id))
        .collect();
    let outbox_ids: Vec<i64> = sends.values().copied().collect();
    let rows = outbox_by_id(db, outbox_ids).await?;
    Ok(attempts
        .into_iter()
        .map(|a| {
            let row = sends.get(&a.send_id).and_then(|o| rows.get(o)).cloned();
            (a, row)
        })
        .collect())
}

/// The alert events of what a transaction did: anomalies opened (and not closed in the same
/// batch), anomalies resolved (`(worker_id, kind, at_us)` that closed something), and health
/// changes. `names` maps worker ids to names.
pub fn events_of(
    opened: &[NewAnomaly],
    resolved: &[(i64, String, i64)],
    health: &[WorkerHealthChange],
    names: &HashMap<i64, String>,
) -> Vec<AlertEvent> {
    let name = |id: &i64| names.get(id).cloned().unwrap_or_else(|| format!("worker#{id}"));
    let mut events = Vec::new();
    for (worker_id, kind, at_us) in resolved {
        events.push(AlertEvent::resolved(&name(worker_id), kind, from_micros(*at_us)));
    }
    for anomaly in opened.iter().filter(|a| a.resolved_at_us.is_none()) {
        let finding = &anomaly.finding;
        events.push(AlertEvent::firing(
            &name(&anomaly.worker_id),
            finding.kind.as_str(),
            finding.severity.as_str(),
            finding.evidence.detail.clone(),
            evidence_value(finding),
            from_micros(anomaly.opened_at_us),
        ));
    }
    let health_name =
        |h: i32| WorkerHealth::try_from(h).map_or("", |h| h.as_str_name().trim_start_matches("WORKER_HEALTH_"));
    for change in health {
        let at = change.at.as_ref().map_or(chrono::DateTime::UNIX_EPOCH, |t| {
            chrono::DateTime::from_timestamp(t.seconds, 0).unwrap_or_default()
        });
        events.extend(AlertEvent::health_change(
            &change.worker_name,
            health_name(change.previous),
            health_name(change.current),
            at,
        ));
    }
    events
}

pub use super::entities::alert_rules::Model as RuleRow;

/// The rules added through the AdminService, oldest first.
pub async fn rules(db: &impl ConnectionTrait) -> Result<Vec<RuleRow>, DbErr> {
    use super::entities::alert_rules;
    alert_rules::Entity::find().order_by_asc(alert_rules::Column::Id).all(db).await
}

pub async fn insert_rule(
    db: &impl ConnectionTrait,
    rule: &crate::domain::alerting::Rule,
    now_us: i64,
) -> Result<RuleRow, DbErr> {
    use super::entities::alert_rules;
    alert_rules::ActiveModel {
        channel: Set(rule.channel.clone()),
        min_severity: Set(rule.min_severity.clone()),
        kinds: Set(serde_json::to_string(&rule.kinds).unwrap_or_else(|_| "[]".into())),
        worker_prefix: Set(rule.worker_prefix.clone()),
        quiet_hours: Set(rule.quiet_hours.clone()),
        after_consecutive: Set(rule.after_consecutive.map(|n| i32::try_from(n).unwrap_or(i32::MAX))),
        created_at_us: Set(now_us),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// Deletes the rule; whether it existed.
pub async fn delete_rule(db: &impl ConnectionTrait, id: i64) -> Result<bool, DbErr> {
    use super::entities::alert_rules;
    Ok(alert_rules::Entity::delete_by_id(id).exec(db).await?.rows_affected > 0)
}

/// A stored rule as the domain type.
pub fn rule_of(row: &RuleRow) -> crate::domain::alerting::Rule {
    crate::domain::alerting::Rule {
        channel: row.channel.clone(),
        min_severity: row.min_severity.clone(),
        kinds: serde_json::from_str(&row.kinds).unwrap_or_default(),
        worker_prefix: row.worker_prefix.clone(),
        quiet_hours: row.quiet_hours.clone(),
        after_consecutive: row.after_consecutive.and_then(|n| u32::try_from(n).ok()),
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::QueryTrait;

    use super::*;
    use crate::store::{Store, StoreOptions, assert_seeks_an_index};

    /// Each of fan-out's lookups is a seek: they run once per outbox row (the firing of a
    /// resolution) or per chunk, inside the write transaction, while the tables only grow.
    #[tokio::test]
    async fn every_fan_out_lookup_seeks_an_index() {
        let store = Store::connect("sqlite::memory:", &StoreOptions::default()).await.expect("open");
        store.migrate().await.expect("migrate");
        let resolved = OutboxRow {
            id: 7,
            alert_key: "w/DURATION_SPIKE".into(),
            worker_name: "w".into(),
            kind: "DURATION_SPIKE".into(),
            severity: "WARNING".into(),
            state: AlertState::Resolved.as_str().into(),
            summary: String::new(),
            evidence: "{}".into(),
            starts_at_us: 0,
            ends_at_us: Some(1),
            created_at_us: 1,
            fanned_out: false,
            occurrences: 1,
        };
        let queries = [
            unfanned_query(500).build(DbBackend::Sqlite),
            firing_query(&resolved).limit(1).build(DbBackend::Sqlite),
            sends_query(vec![1, 2, 3]).build(DbBackend::Sqlite),
        ];
        for query in queries {
            assert_seeks_an_index(&store, query).await;
        }
        store.close().await;
    }
}
