//! Queries on `streams` and `guardian_snapshots`: the guardian's durable state.

use std::collections::HashMap;

use prost::Message;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Statement,
};

use super::{
    entities::{guardian_snapshots, streams},
    from_micros, to_micros,
};
use crate::{
    domain::guardian::{StreamState, TrackedStream},
    proto::v1::GuardianStatus,
};

pub use streams::Model as StreamRow;

pub fn state_code(state: StreamState) -> i16 {
    match state {
        StreamState::Healthy => 1,
        StreamState::Stale => 2,
        StreamState::Orphaned => 3,
        StreamState::Closed => 4,
    }
}

pub fn state_from_code(code: i16) -> Option<StreamState> {
    match code {
        1 => Some(StreamState::Healthy),
        2 => Some(StreamState::Stale),
        3 => Some(StreamState::Orphaned),
        4 => Some(StreamState::Closed),
        _ => None,
    }
}

impl StreamRow {
    pub fn to_domain(&self) -> TrackedStream {
        TrackedStream {
            stream_id: self.stream_id.clone(),
            stream_type: self.stream_type.clone(),
            owner: self.owner.clone(),
            opened_at: from_micros(self.opened_at_us),
            last_heartbeat: from_micros(self.last_heartbeat_us),
            closed_at: self.closed_at_us.map(from_micros),
            close_reason: self.close_reason.clone(),
            owner_gone: self.owner_gone,
            orphaned_at: self.orphaned_at_us.map(from_micros),
        }
    }

    pub fn labels(&self) -> HashMap<String, String> {
        serde_json::from_str(&self.labels).unwrap_or_default()
    }
}

/// Registers a new stream; `Ok(false)` when its id is taken.
pub async fn insert(
    db: &impl ConnectionTrait,
    stream: &TrackedStream,
    labels: &HashMap<String, String>,
) -> Result<bool, DbErr> {
    if find(db, &stream.stream_id).await?.is_some() {
        return Ok(false);
    }
    streams::ActiveModel {
        stream_id: Set(stream.stream_id.clone()),
        stream_type: Set(stream.stream_type.clone()),
        owner: Set(stream.owner.clone()),
        labels: Set(serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())),
        opened_at_us: Set(to_micros(stream.opened_at)),
        last_heartbeat_us: Set(to_micros(stream.last_heartbeat)),
        closed_at_us: Set(None),
        close_reason: Set(None),
        owner_gone: Set(false),
        orphaned_at_us: Set(None),
        state: Set(state_code(StreamState::Healthy)),
    }
    .insert(db)
    .await?;
    Ok(true)
}

pub async fn find(db: &impl ConnectionTrait, stream_id: &str) -> Result<Option<StreamRow>, DbErr> {
    streams::Entity::find_by_id(stream_id.to_owned()).one(db).await
}

/// The streams among `stream_ids` that exist (in no particular order), read in chunks of 500.
pub async fn find_many(db: &impl ConnectionTrait, stream_ids: &[&str]) -> Result<Vec<StreamRow>, DbErr> {
    let mut rows = Vec::with_capacity(stream_ids.len());
    for chunk in stream_ids.chunks(500) {
        rows.extend(
            streams::Entity::find().filter(streams::Column::StreamId.is_in(chunk.iter().copied())).all(db).await?,
        );
    }
    Ok(rows)
}

/// Marks a stream closed (its first close wins).
pub async fn close(db: &impl ConnectionTrait, row: StreamRow, at_us: i64, reason: &str) -> Result<StreamRow, DbErr> {
    let mut active = row.into_active_model();
    active.closed_at_us = Set(Some(at_us));
    active.close_reason = Set((!reason.is_empty()).then(|| reason.to_owned()));
    active.state = Set(state_code(StreamState::Closed));
    active.update(db).await
}

/// Applies buffered heartbeats; a heartbeat never moves `last_heartbeat` backwards and never
/// revives a closed or orphaned stream.
/// One UPDATE per chunk of 500 (a joined VALUES list), not one per stream.
pub async fn apply_heartbeats(db: &impl ConnectionTrait, beats: &HashMap<String, i64>) -> Result<(), DbErr> {
    use std::fmt::Write;
    let backend = db.get_database_backend();
    // In id order: neighbouring ids share index pages, so each chunk reads and dirties fewer.
    let mut entries: Vec<(&String, &i64)> = beats.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for chunk in entries.chunks(500) {
        let mut values = String::with_capacity(chunk.len() * 32);
        let mut params: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len());
        for (i, (stream_id, at_us)) in chunk.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            // Only the integer is interpolated; the id is a bound parameter.
            let _ = match backend {
                DbBackend::Postgres => write!(values, "{separator}(${}::text, {at_us}::bigint)", i + 1),
                _ => write!(values, "{separator}(?, {at_us})"),
            };
            params.push(stream_id.as_str().into());
        }
        let sql = format!(
            "WITH beats(id, at) AS (VALUES {values}) \
             UPDATE streams SET last_heartbeat_us = beats.at FROM beats \
             WHERE streams.stream_id = beats.id AND streams.last_heartbeat_us < beats.at \
             AND streams.closed_at_us IS NULL AND streams.orphaned_at_us IS NULL"
        );
        db.execute_raw(Statement::from_sql_and_values(backend, sql, params)).await?;
    }
    Ok(())
}

/// What a tick needs to read: how many streams were healthy at the last tick and still have a fresh
/// heartbeat (`last_heartbeat_us >= fresh_since_us`, counted from the index alone), and every stream
/// whose state may have changed — not healthy at the last tick, aging past `fresh_since_us`, closed or
/// orphaned. In a steady state the second set is small, so a tick over 100 k streams reads little.
pub async fn tick_candidates(db: &impl ConnectionTrait, fresh_since_us: i64) -> Result<(u64, Vec<StreamRow>), DbErr> {
    use streams::Column as C;
    let healthy = state_code(StreamState::Healthy);
    let fresh: i64 = streams::Entity::find()
        .select_only()
        .column_as(C::StreamId.count(), "n")
        .filter(C::State.eq(healthy))
        .filter(C::LastHeartbeatUs.gte(fresh_since_us))
        .into_tuple()
        .one(db)
        .await?
        .unwrap_or(0);
    let rows = streams::Entity::find()
        .filter(
            Condition::any()
                .add(C::State.gt(healthy))
                .add(Condition::all().add(C::State.eq(healthy)).add(C::LastHeartbeatUs.lt(fresh_since_us)))
                .add(C::ClosedAtUs.is_not_null())
                // An owner declared gone is stamped with orphaned_at (`TrackedStream::mark_owner_gone`).
                .add(C::OrphanedAtUs.is_not_null()),
        )
        .all(db)
        .await?;
    Ok((u64::try_from(fresh).unwrap_or(0), rows))
}

/// Up to `limit` streams by id after `after`, filtered by state and type.
pub async fn list(
    db: &impl ConnectionTrait,
    state: Option<StreamState>,
    stream_type: Option<&str>,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<StreamRow>, DbErr> {
    let mut query = streams::Entity::find().order_by_asc(streams::Column::StreamId).limit(limit);
    if let Some(state) = state {
        query = query.filter(streams::Column::State.eq(state_code(state)));
    }
    if let Some(t) = stream_type {
        query = query.filter(streams::Column::StreamType.eq(t));
    }
    if let Some(after) = after {
        query = query.filter(streams::Column::StreamId.gt(after));
    }
    query.all(db).await
}

/// Saves a tick's decisions: new states (and first orphaned times) and removals.
pub async fn apply_tick(
    db: &impl ConnectionTrait,
    states: &[(String, StreamState, Option<i64>)],
    remove: &[String],
) -> Result<(), DbErr> {
    for (stream_id, state, orphaned_at_us) in states {
        let mut update = streams::Entity::update_many()
            .col_expr(streams::Column::State, sea_orm::sea_query::Expr::value(state_code(*state)))
            .filter(streams::Column::StreamId.eq(stream_id.as_str()));
        if let Some(at) = orphaned_at_us {
            update = update.col_expr(streams::Column::OrphanedAtUs, sea_orm::sea_query::Expr::value(*at));
        }
        update.exec(db).await?;
    }
    for chunk in remove.chunks(500) {
        streams::Entity::delete_many()
            .filter(streams::Column::StreamId.is_in(chunk.iter().map(String::as_str)))
            .exec(db)
            .await?;
    }
    Ok(())
}

pub async fn insert_snapshot(db: &impl ConnectionTrait, at_us: i64, status: &GuardianStatus) -> Result<(), DbErr> {
    guardian_snapshots::ActiveModel { at_us: Set(at_us), status: Set(status.encode_to_vec()), ..Default::default() }
        .insert(db)
        .await?;
    Ok(())
}

/// The newest snapshot, if any.
pub async fn latest_snapshot(db: &impl ConnectionTrait) -> Result<Option<(i64, GuardianStatus)>, DbErr> {
    let row = guardian_snapshots::Entity::find().order_by_desc(guardian_snapshots::Column::AtUs).one(db).await?;
    row.map(|r| {
        GuardianStatus::decode(r.status.as_slice())
            .map(|s| (r.at_us, s))
            .map_err(|e| DbErr::Custom(format!("corrupt guardian snapshot {}: {e}", r.id)))
    })
    .transpose()
}

/// Deletes snapshots older than `before_us`.
pub async fn prune_snapshots(db: &impl ConnectionTrait, before_us: i64) -> Result<u64, DbErr> {
    Ok(guardian_snapshots::Entity::delete_many()
        .filter(guardian_snapshots::Column::AtUs.lt(before_us))
        .exec(db)
        .await?
        .rows_affected)
}

/// How many snapshots are kept (tests, operators).
pub async fn snapshot_count(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    use sea_orm::PaginatorTrait;
    guardian_snapshots::Entity::find().count(db).await
}
