//! The stream guardian at run time: the GuardianService operations on durable state, heartbeats
//! buffered and flushed in batches, and the periodic tick that classifies every stream (pure
//! logic in [`domain::guardian`](crate::domain::guardian)), saves the decisions and a snapshot,
//! publishes the status to watchers and reports itself as worker `sse_guardian`.
//!
//! With several replicas on PostgreSQL, a tick runs inside a transaction holding an advisory
//! lock and is skipped when any replica ticked less than 0.9 of an interval ago, so one replica
//! ticks per interval and another takes over when it stops.

use std::{collections::HashMap, sync::Arc, time::Instant};

use chrono::{DateTime, TimeDelta, Utc};
use pbjson_types::{Struct, Value, value::Kind};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api::Clock,
    domain::{
        guardian::{
            self, GuardianConfig, GuardianTick, HeartbeatRefusal, StreamState, TrackedStream, Warning, WarningKind,
            validate_stream_id, validate_stream_type,
        },
        validation::{to_timestamp, validate_report},
    },
    error::Error,
    proto::v1::{self as pb, GuardianStatus, GuardianWarning},
    store::{Store, from_micros, ingest::Ingest, notify, streams, to_micros},
};

/// Key of the advisory lock that makes one replica tick at a time.
const TICK_LOCK_KEY: i64 = 0x7275_6e77_6172_6402;
/// How long tick snapshots are kept.
const SNAPSHOT_RETENTION: TimeDelta = TimeDelta::days(7);
/// How long a stream read from the database is trusted by [`Guardian::heartbeat`]. Ends decided
/// here or announced by other replicas (LISTEN/NOTIFY) evict entries at once; the TTL bounds what a
/// lost notice can cost.
const KNOWN_TTL: TimeDelta = TimeDelta::minutes(5);
/// The known-stream cache is emptied of expired entries when it grows past this.
const KNOWN_PRUNE_AT: usize = 200_000;
/// At most this many ids in one [`Guardian::heartbeat_batch`].
pub const MAX_HEARTBEAT_BATCH: usize = 10_000;
/// The worker name the guardian reports its ticks as.
pub const GUARDIAN_WORKER: &str = "sse_guardian";

pub struct Guardian {
    store: Store,
    config: GuardianConfig,
    ingest: Ingest,
    clock: Arc<dyn Clock>,
    /// stream id → newest heartbeat (µs) not yet written.
    heartbeats: std::sync::Mutex<HashMap<String, i64>>,
    /// Streams this replica recently read, opened or heartbeated, with when it learned of them, so
    /// a heartbeat needs no database read. Entries live [`KNOWN_TTL`]; closes and ticks on any
    /// replica evict the streams they end (other replicas' through LISTEN/NOTIFY). Should a notice be
    /// lost, a stream ended elsewhere accepts heartbeats here until its entry expires (harmless: the
    /// write never revives an ended stream).
    known: std::sync::Mutex<HashMap<String, (TrackedStream, DateTime<Utc>)>>,
    status: watch::Sender<GuardianStatus>,
    /// The tasks that track this server's own live watches ([`crate::api::guardian::track_watch`]):
    /// a stopping server waits for them to record their streams as closed before it closes the
    /// database.
    watches: TaskTracker,
    /// Cancelled when the server begins to drain: every live watch then ends.
    stopping: CancellationToken,
}

/// What [`Guardian::heartbeat_batch`] did.
#[derive(Debug)]
pub struct HeartbeatBatch {
    pub accepted: u64,
    pub refused: Vec<RefusedBeat>,
    /// When the accepted streams turn stale unless heartbeated again.
    pub stale_at: DateTime<Utc>,
}

/// One id of a batch that was not accepted.
#[derive(Debug)]
pub struct RefusedBeat {
    /// Its position in the request.
    pub index: usize,
    pub stream_id: String,
    pub refusal: BeatRefusal,
}

/// Why a heartbeat was refused: the stream is unknown here, or the rules refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeatRefusal {
    /// Never opened, or cleaned up since.
    Unknown,
    Refused(HeartbeatRefusal),
}

impl BeatRefusal {
    /// The reason as a client reads it; the client must open a new stream in every case.
    pub fn message(self, stream_id: &str) -> String {
        match self {
            BeatRefusal::Unknown => format!("stream {stream_id:?} is unknown or was cleaned up; open a new one"),
            BeatRefusal::Refused(HeartbeatRefusal::Closed) => {
                format!("stream {stream_id:?} is closed; open a new one")
            }
            BeatRefusal::Refused(HeartbeatRefusal::Orphaned) => {
                format!("stream {stream_id:?} was declared orphaned; open a new one")
            }
        }
    }

    /// A one-word reason for the batch reply: `unknown`, `closed` or `orphaned`.
    pub fn as_str(self) -> &'static str {
        match self {
            BeatRefusal::Unknown => "unknown",
            BeatRefusal::Refused(HeartbeatRefusal::Closed) => "closed",
            BeatRefusal::Refused(HeartbeatRefusal::Orphaned) => "orphaned",
        }
    }
}

fn state_to_proto(state: StreamState) -> pb::StreamState {
    match state {
        StreamState::Healthy => pb::StreamState::Healthy,
        StreamState::Stale => pb::StreamState::Stale,
        StreamState::Orphaned => pb::StreamState::Orphaned,
        StreamState::Closed => pb::StreamState::Closed,
    }
}

impl Guardian {
    pub async fn new(
        store: Store,
        config: GuardianConfig,
        ingest: Ingest,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Guardian>, Error> {
        let latest = streams::latest_snapshot(store.reader()).await?.map(|(_, s)| s).unwrap_or_default();
        let (status, _) = watch::channel(latest);
        let mut ends = ingest.subscribe_stream_ends();
        let guardian = Arc::new(Guardian {
            store,
            config,
            ingest,
            clock,
            heartbeats: Default::default(),
            known: Default::default(),
            status,
            watches: TaskTracker::new(),
            stopping: CancellationToken::new(),
        });
        let weak = Arc::downgrade(&guardian);
        tokio::spawn(async move {
            loop {
                let ended = match ends.recv().await {
                    Ok(ended) => ended,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Notices were missed: trust nothing cached.
                        match weak.upgrade() {
                            Some(guardian) => guardian.forget_all(),
                            None => return,
                        }
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(guardian) = weak.upgrade() else { return };
                guardian.forget(ended.iter().map(String::as_str));
            }
        });
        Ok(guardian)
    }

    pub fn config(&self) -> &GuardianConfig {
        &self.config
    }

    /// Runs `task`, the tracking of one of this server's live watches, where
    /// [`Guardian::watches_closed`] waits for it.
    pub(crate) fn spawn_watch(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.watches.spawn(task);
    }

    /// Resolves when the server begins to stop: live watches end then.
    pub(crate) async fn stopping(&self) {
        self.stopping.cancelled().await;
    }

    /// Ends every live watch (their clients are told to reconnect): the server is draining, and an
    /// open watch would otherwise hold its connection open until the shutdown timeout.
    pub fn stop_watches(&self) {
        self.stopping.cancel();
    }

    /// Waits, at most `within`, until every live watch has ended and recorded its stream as
    /// closed. False if some had not.
    pub async fn watches_closed(&self, within: std::time::Duration) -> bool {
        self.watches.close();
        tokio::time::timeout(within, self.watches.wait()).await.is_ok()
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn to_proto(&self, row: &streams::StreamRow, now: DateTime<Utc>) -> pb::TrackedStream {
        let mut stream = row.to_domain();
        if let Some(beat) = self.buffered(&row.stream_id) {
            stream.last_heartbeat = stream.last_heartbeat.max(from_micros(beat));
        }
        let state = guardian::state_of(&stream, now, &self.config);
        pb::TrackedStream {
            stream_id: stream.stream_id.clone(),
            stream_type: stream.stream_type.clone(),
            owner: stream.owner.clone(),
            labels: row.labels(),
            opened_at: Some(to_timestamp(stream.opened_at)),
            last_heartbeat: Some(to_timestamp(stream.last_heartbeat)),
            state: state_to_proto(state) as i32,
            closed_at: stream.closed_at.map(to_timestamp),
            close_reason: stream.close_reason.clone().unwrap_or_default(),
            stale_at: Some(to_timestamp(stream.last_heartbeat + self.config.stale_after)),
        }
    }

    fn buffered(&self, stream_id: &str) -> Option<i64> {
        self.heartbeats.lock().ok().and_then(|b| b.get(stream_id).copied())
    }

    pub async fn open(&self, request: pb::OpenStreamRequest) -> Result<pb::TrackedStream, Error> {
        let mut violations = Vec::new();
        let stream_id = if request.stream_id.is_empty() { uuid::Uuid::now_v7().to_string() } else { request.stream_id };
        if let Err(why) = validate_stream_id(&stream_id) {
            violations.push(crate::domain::validation::FieldViolation::new("stream_id", why));
        }
        if let Err(why) = validate_stream_type(&request.stream_type, &self.config) {
            violations.push(crate::domain::validation::FieldViolation::new("stream_type", why));
        }
        if request.owner.len() > 256 {
            violations.push(crate::domain::validation::FieldViolation::new("owner", "must be at most 256 bytes"));
        }
        if request.labels.len() > 32 || request.labels.iter().any(|(k, v)| k.len() > 64 || v.len() > 256) {
            violations.push(crate::domain::validation::FieldViolation::new(
                "labels",
                "at most 32 labels, keys up to 64 bytes, values up to 256 bytes",
            ));
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let now = self.now();
        let stream = TrackedStream::open(stream_id.clone(), request.stream_type, request.owner, now);
        let txn = self.store.begin_write().await?;
        let inserted = streams::insert(&txn, &stream, &request.labels).await?;
        txn.commit().await?;
        if !inserted {
            return Err(Error::AlreadyExists(format!(
                "stream {stream_id:?} is already open; heartbeat it or use a new id"
            )));
        }
        metrics::counter!("runwarden_streams_opened_total", "type" => stream.stream_type.clone()).increment(1);
        self.remember(&stream, now);
        let row = streams::find(self.store.reader(), &stream_id)
            .await?
            .ok_or_else(|| Error::internal(format!("stream {stream_id} vanished after insert")))?;
        Ok(self.to_proto(&row, now))
    }

    /// Accepts a heartbeat (buffered; written within the flush interval).
    pub async fn heartbeat(&self, stream_id: &str) -> Result<DateTime<Utc>, Error> {
        let now = self.now();
        let stream = match self.known_stream(stream_id, now) {
            Some(stream) => Some(stream),
            None => streams::find(self.store.reader(), stream_id).await?.map(|row| {
                let stream = row.to_domain();
                self.remember(&stream, now);
                stream
            }),
        };
        self.accept_heartbeat(stream_id, stream, now).map_err(|refusal| Error::NotFound(refusal.message(stream_id)))
    }

    /// Accepts heartbeats for many streams at once; one refused id never refuses the others.
    /// Streams this replica does not know yet are read in one query, not one per id.
    pub async fn heartbeat_batch(&self, stream_ids: &[String]) -> Result<HeartbeatBatch, Error> {
        if stream_ids.is_empty() || stream_ids.len() > MAX_HEARTBEAT_BATCH {
            return Err(Error::invalid(
                "stream_ids",
                format!("must hold 1 to {MAX_HEARTBEAT_BATCH} ids, got {}", stream_ids.len()),
            ));
        }
        let now = self.now();
        let mut known: HashMap<&str, TrackedStream> = HashMap::with_capacity(stream_ids.len());
        let mut missing = Vec::new();
        for id in stream_ids {
            if known.contains_key(id.as_str()) {
                continue;
            }
            match self.known_stream(id, now) {
                Some(stream) => {
                    known.insert(id, stream);
                }
                None => missing.push(id.as_str()),
            }
        }
        missing.sort_unstable();
        missing.dedup();
        for row in streams::find_many(self.store.reader(), &missing).await? {
            let stream = row.to_domain();
            self.remember(&stream, now);
            // `missing` is sorted: find the request's own &str for the key.
            if let Ok(at) = missing.binary_search(&stream.stream_id.as_str()) {
                known.insert(missing[at], stream);
            }
        }
        let mut batch = HeartbeatBatch { accepted: 0, refused: Vec::new(), stale_at: now + self.config.stale_after };
        for (index, id) in stream_ids.iter().enumerate() {
            match self.accept_heartbeat(id, known.get(id.as_str()).cloned(), now) {
                Ok(_) => batch.accepted += 1,
                Err(refusal) => batch.refused.push(RefusedBeat { index, stream_id: id.clone(), refusal }),
            }
        }
        Ok(batch)
    }

    /// The heartbeat rules on a stream as known here (`None`: unknown), buffering the accepted beat.
    fn accept_heartbeat(
        &self,
        stream_id: &str,
        stream: Option<TrackedStream>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, BeatRefusal> {
        let mut stream = stream.ok_or(BeatRefusal::Unknown)?;
        if let Some(beat) = self.buffered(stream_id) {
            stream.last_heartbeat = stream.last_heartbeat.max(from_micros(beat));
        }
        guardian::heartbeat(&mut stream, now, &self.config).map_err(BeatRefusal::Refused)?;
        if let Ok(mut buffer) = self.heartbeats.lock() {
            let at = to_micros(stream.last_heartbeat);
            let slot = buffer.entry(stream_id.to_owned()).or_insert(at);
            *slot = (*slot).max(at);
        }
        // The cached copy follows the accepted heartbeat (the buffer is emptied at each flush).
        if let Ok(mut known) = self.known.lock()
            && let Some((cached, _)) = known.get_mut(stream_id)
        {
            cached.last_heartbeat = cached.last_heartbeat.max(stream.last_heartbeat);
        }
        Ok(stream.last_heartbeat + self.config.stale_after)
    }

    /// A stream this replica learned of less than [`KNOWN_TTL`] ago.
    fn known_stream(&self, stream_id: &str, now: DateTime<Utc>) -> Option<TrackedStream> {
        let known = self.known.lock().ok()?;
        let (stream, learned_at) = known.get(stream_id)?;
        (now - *learned_at <= KNOWN_TTL && now >= *learned_at).then(|| stream.clone())
    }

    fn remember(&self, stream: &TrackedStream, now: DateTime<Utc>) {
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= KNOWN_PRUNE_AT {
                known.retain(|_, (_, learned_at)| now - *learned_at <= KNOWN_TTL);
            }
            known.insert(stream.stream_id.clone(), (stream.clone(), now));
        }
    }

    fn forget_all(&self) {
        if let Ok(mut known) = self.known.lock() {
            known.clear();
        }
    }

    fn forget<'a>(&self, stream_ids: impl IntoIterator<Item = &'a str>) {
        if let Ok(mut known) = self.known.lock() {
            for id in stream_ids {
                known.remove(id);
            }
        }
    }

    pub async fn close(&self, stream_id: &str, reason: &str) -> Result<pb::TrackedStream, Error> {
        self.forget([stream_id]);
        let txn = self.store.begin_write().await?;
        let row = streams::find(&txn, stream_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("stream {stream_id:?} is unknown or was cleaned up")))?;
        let now = self.now();
        let row = if row.closed_at_us.is_none() {
            let closed =
                streams::close(&txn, row, to_micros(now), &reason.chars().take(512).collect::<String>()).await?;
            notify::send_stream_ends(&txn, self.store.replica(), &[stream_id]).await?;
            closed
        } else {
            row
        };
        txn.commit().await?;
        // Again after the commit: a heartbeat in between may have cached the stream as still open.
        self.forget([stream_id]);
        Ok(self.to_proto(&row, now))
    }

    /// Up to `limit` streams by id after `after`. The state filter applies to the state as of
    /// now (heartbeats since the last tick included), not to the last tick's.
    pub async fn list(
        &self,
        state: Option<StreamState>,
        stream_type: Option<&str>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<pb::TrackedStream>, Error> {
        let now = self.now();
        let wanted = state.map(|s| state_to_proto(s) as i32);
        let mut out = Vec::new();
        let mut cursor = after.map(str::to_owned);
        loop {
            let rows = streams::list(self.store.reader(), None, stream_type, cursor.as_deref(), 500).await?;
            let Some(last) = rows.last() else { return Ok(out) };
            cursor = Some(last.stream_id.clone());
            for row in &rows {
                let stream = self.to_proto(row, now);
                if wanted.is_none_or(|w| stream.state == w) {
                    out.push(stream);
                    if out.len() as u64 >= limit {
                        return Ok(out);
                    }
                }
            }
            if rows.len() < 500 {
                return Ok(out);
            }
        }
    }

    /// The latest tick's status.
    pub fn status(&self) -> GuardianStatus {
        self.status.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<GuardianStatus> {
        self.status.subscribe()
    }

    /// Writes the buffered heartbeats in one transaction.
    pub async fn flush_heartbeats(&self) -> Result<usize, Error> {
        let beats = match self.heartbeats.lock() {
            Ok(buffer) if buffer.is_empty() => return Ok(0),
            Ok(buffer) => buffer.clone(),
            Err(_) => return Ok(0),
        };
        let waited = Instant::now();
        let txn = self.store.begin_write().await?;
        let started = Instant::now();
        streams::apply_heartbeats(&txn, &beats).await?;
        txn.commit().await?;
        // Only now, durable, do they leave the buffer (a tick meanwhile still merges them); a newer
        // beat that arrived during the write stays for the next flush.
        if let Ok(mut buffer) = self.heartbeats.lock() {
            buffer.retain(|id, at| beats.get(id).is_none_or(|written| *at > *written));
        }
        metrics::histogram!("runwarden_guardian_flush_wait_seconds").record((started - waited).as_secs_f64());
        metrics::histogram!("runwarden_guardian_flush_seconds").record(started.elapsed().as_secs_f64());
        Ok(beats.len())
    }

    /// One tick: `Ok(None)` when another replica holds the tick. Reports itself as a run of
    /// `sse_guardian` either way it ends.
    pub async fn run_once(&self) -> Result<Option<GuardianTick>, Error> {
        let started = Instant::now();
        let now = self.now();
        let result = self.tick(now).await;
        let elapsed = started.elapsed();
        match &result {
            Ok(Some((tick, status))) => {
                for warning in &tick.warnings {
                    tracing::warn!(
                        kind = warning.kind.as_str(),
                        value = warning.value,
                        threshold = warning.threshold,
                        "guardian: {}",
                        warning.message
                    );
                }
                metrics::gauge!("runwarden_guardian_active_streams").set(tick.metrics.active_streams as f64);
                metrics::gauge!("runwarden_guardian_orphaned_streams").set(tick.metrics.orphaned_streams as f64);
                metrics::histogram!("runwarden_guardian_tick_seconds").record(elapsed.as_secs_f64());
                self.status.send_replace(status.clone());
                if let Err(e) = self.record_warning_alerts(&tick.warnings, now).await {
                    tracing::warn!(error = %e, "cannot record guardian warning alerts");
                }
                self.report(now, elapsed, Some(status), None).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "guardian tick failed");
                self.report(now, elapsed, None, Some(e.to_string())).await;
            }
        }
        result.map(|r| r.map(|(tick, _)| tick))
    }

    /// Each threshold warning is an alert (`GUARDIAN_<KIND>` of worker `sse_guardian`): firing
    /// while crossed, resolved when no longer (only changes are recorded).
    async fn record_warning_alerts(&self, warnings: &[Warning], now: DateTime<Utc>) -> Result<(), Error> {
        use crate::domain::alerting::AlertEvent;
        let kinds = [WarningKind::TooManyStale, WarningKind::TooManyOrphaned, WarningKind::OrphanRateHigh];
        let events: Vec<AlertEvent> = kinds
            .iter()
            .map(|kind| {
                let name = format!("GUARDIAN_{}", kind.as_str());
                match warnings.iter().find(|w| w.kind == *kind) {
                    Some(w) => AlertEvent::firing(
                        GUARDIAN_WORKER,
                        &name,
                        "WARNING",
                        w.message.clone(),
                        serde_json::json!({ "value": w.value, "threshold": w.threshold }),
                        now,
                    ),
                    None => AlertEvent::resolved(GUARDIAN_WORKER, &name, now),
                }
            })
            .collect();
        let txn = self.store.begin_write().await?;
        crate::store::alerts::record(&txn, &events, crate::store::to_micros(now)).await?;
        txn.commit().await?;
        Ok(())
    }

    async fn tick(&self, now: DateTime<Utc>) -> Result<Option<(GuardianTick, GuardianStatus)>, Error> {
        let started = Instant::now();
        // Heartbeats not yet flushed are merged in memory below, so the tick does not wait for
        // the flush (its own job, on its own interval).
        let txn = self.store.begin_write().await?;
        if !crate::store::try_singleton_lock(&txn, TICK_LOCK_KEY).await? {
            txn.commit().await?;
            return Ok(None);
        }
        // Another replica (or this one) already ticked in this interval.
        let recent = TimeDelta::from_std(self.config.tick_interval.mul_f64(0.9)).unwrap_or(TimeDelta::zero());
        if let Some((at_us, _)) = streams::latest_snapshot(&txn).await?
            && at_us > to_micros(now - recent)
            && at_us <= to_micros(now)
        {
            txn.commit().await?;
            return Ok(None);
        }
        // Streams healthy at the last tick with a fresh heartbeat stay healthy: count them, load the rest.
        let fresh_since = to_micros(now - self.config.stale_after);
        let (fresh, rows) = streams::tick_candidates(&txn, fresh_since).await?;
        let healthy = streams::state_code(StreamState::Healthy);
        let loaded_fresh =
            rows.iter().filter(|r| r.state == healthy && r.last_heartbeat_us >= fresh_since).count() as u64;
        let previous: HashMap<String, StreamState> =
            rows.iter().filter_map(|r| streams::state_from_code(r.state).map(|s| (r.stream_id.clone(), s))).collect();
        let tracked: Vec<TrackedStream> = {
            let buffered = self.heartbeats.lock().ok();
            rows.iter()
                .map(|row| {
                    let mut stream = row.to_domain();
                    if let Some(beat) = buffered.as_ref().and_then(|b| b.get(&row.stream_id)) {
                        stream.last_heartbeat = stream.last_heartbeat.max(from_micros(*beat));
                    }
                    stream
                })
                .collect()
        };
        let tick = guardian::with_untouched_healthy(
            guardian::classify(&tracked, &previous, now, &self.config),
            fresh.saturating_sub(loaded_fresh),
            &self.config,
        );
        let changes: Vec<(String, StreamState, Option<i64>)> =
            tick.transitions.iter().map(|t| (t.stream_id.clone(), t.to, t.orphaned_at.map(to_micros))).collect();
        streams::apply_tick(&txn, &changes, &tick.remove).await?;
        let ended: Vec<&str> = tick
            .transitions
            .iter()
            .filter(|t| matches!(t.to, StreamState::Orphaned | StreamState::Closed))
            .map(|t| t.stream_id.as_str())
            .chain(tick.remove.iter().map(String::as_str))
            .collect();
        notify::send_stream_ends(&txn, self.store.replica(), &ended).await?;
        self.forget(ended.iter().copied());
        let m = &tick.metrics;
        let status = GuardianStatus {
            at: Some(to_timestamp(now)),
            active_streams: m.active_streams as i64,
            healthy_streams: m.healthy_streams as i64,
            stale_streams: m.stale_streams as i64,
            orphaned_streams: m.orphaned_streams as i64,
            cleaned_streams: m.cleaned_streams as i64,
            orphan_rate: m.orphan_rate,
            orphaned_by_type: m.orphaned_by_type.iter().map(|(k, v)| (k.clone(), *v as i64)).collect(),
            warnings: tick
                .warnings
                .iter()
                .map(|w| GuardianWarning {
                    kind: w.kind.as_str().to_owned(),
                    value: w.value,
                    threshold: w.threshold,
                    message: w.message.clone(),
                })
                .collect(),
            tick_duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        streams::insert_snapshot(&txn, to_micros(now), &status).await?;
        streams::prune_snapshots(&txn, to_micros(now - SNAPSHOT_RETENTION)).await?;
        txn.commit().await?;
        self.forget(
            tick.transitions
                .iter()
                .filter(|t| matches!(t.to, StreamState::Orphaned | StreamState::Closed))
                .map(|t| t.stream_id.as_str())
                .chain(tick.remove.iter().map(String::as_str)),
        );
        Ok(Some((tick, status)))
    }

    /// Reports a tick as a run of `sse_guardian` through the ordinary ingest path.
    async fn report(
        &self,
        now: DateTime<Utc>,
        elapsed: std::time::Duration,
        status: Option<&GuardianStatus>,
        error: Option<String>,
    ) {
        let number = |n: f64| Value { kind: Some(Kind::NumberValue(n)) };
        let custom_metrics = status.map(|s| {
            let mut fields = std::collections::BTreeMap::new();
            fields.insert("active_streams".to_owned(), number(s.active_streams as f64));
            fields.insert("healthy_streams".to_owned(), number(s.healthy_streams as f64));
            fields.insert("stale_streams".to_owned(), number(s.stale_streams as f64));
            fields.insert("orphaned_streams".to_owned(), number(s.orphaned_streams as f64));
            fields.insert("cleaned_streams".to_owned(), number(s.cleaned_streams as f64));
            fields.insert("orphan_rate".to_owned(), number(s.orphan_rate));
            let by_type = s.orphaned_by_type.iter().map(|(k, v)| (k.clone(), number(*v as f64))).collect();
            fields.insert(
                "orphaned_by_type".to_owned(),
                Value { kind: Some(Kind::StructValue(Struct { fields: by_type })) },
            );
            fields.insert("warnings".to_owned(), number(s.warnings.len() as f64));
            Struct { fields: fields.into_iter().collect() }
        });
        let report = pb::ExecutionReport {
            worker_name: GUARDIAN_WORKER.to_owned(),
            worker_type: "sse".to_owned(),
            started_at: Some(to_timestamp(now)),
            duration_ms: Some(elapsed.as_millis() as i64),
            outcome: if error.is_some() { pb::Outcome::Failed } else { pb::Outcome::Success } as i32,
            error_message: error.unwrap_or_default(),
            custom_metrics,
            ..Default::default()
        };
        let received = self.now().max(now + TimeDelta::from_std(elapsed).unwrap_or_default());
        match validate_report(Some(report), received) {
            Ok(valid) => {
                if let Err(e) = self.ingest.submit(valid, received).await {
                    tracing::warn!(error = %e, "cannot store the guardian's own report");
                }
            }
            Err(violations) => tracing::error!(?violations, "the guardian's own report is invalid"),
        }
    }
}

/// Ticks every `tick_interval` and flushes heartbeats every `flush_interval` until `stop` fires.
pub async fn run(guardian: Arc<Guardian>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(guardian.config.tick_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush = tokio::time::interval(guardian.config.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {
                let _ = guardian.run_once().await;
            }
            _ = flush.tick() => {
                if let Err(e) = guardian.flush_heartbeats().await {
                    tracing::warn!(error = %e, "cannot write heartbeats");
                }
            }
        }
    }
    if let Err(e) = guardian.flush_heartbeats().await {
        tracing::warn!(error = %e, "cannot write the last heartbeats");
    }
}
